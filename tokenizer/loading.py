"""Pick the tokenizer class that the description file in a checkpoint folder names."""
from __future__ import annotations

import json
from pathlib import Path

from .base import CONFIG_FILE, TokenizerBase
from .sentencepiece_tokenizer import SentencePieceWhisperTokenizer
from .whisper_bpe import get_tokenizer


def load_tokenizer_dir(directory: str | Path, *, language: str | None = None, task: str | None = None) -> TokenizerBase:
    """The tokenizer saved in `directory` (by WhisperTokenizer.save or SentencePieceWhisperTokenizer.save)."""
    path = Path(directory) / CONFIG_FILE
    config = json.loads(path.read_text())
    kind = config.get("kind")
    if kind == "whisper":
        return get_tokenizer(
            config["multilingual"], num_languages=config["num_languages"], language=language, task=task
        )
    if kind == "sentencepiece":
        return SentencePieceWhisperTokenizer.load(directory, language=language, task=task)
    raise ValueError(f"{path}: unknown tokenizer kind {kind!r}")


def tokenizer_beside(model_path: str | Path) -> TokenizerBase | None:
    """The tokenizer saved beside a checkpoint (in its folder, or beside its file), or None when
    there is none (a size name, or a checkpoint that uses OpenAI's vocabulary)."""
    path = Path(model_path)
    if not path.exists():
        return None
    folder = path if path.is_dir() else path.parent
    return load_tokenizer_dir(folder) if (folder / CONFIG_FILE).is_file() else None
