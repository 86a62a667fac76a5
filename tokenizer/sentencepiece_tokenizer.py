"""SentencePiece text vocabularies with Whisper's special tokens, for models trained from scratch."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from .base import CONFIG_FILE, TokenizerBase, special_token_strings

MODEL_FILE = "spm.model"
MODEL_TYPES = ("unigram", "bpe")


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> Path:
    """Train a SentencePiece model on `texts`; returns the path of `{model_prefix}.model`.

    `vocab_size` counts SentencePiece pieces only (Whisper's specials come on top) and includes the
    256 byte-fallback pieces; on a corpus too small to fill it the vocabulary comes out smaller.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=(text for text in texts if text.strip()),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        hard_vocab_limit=False,  # tiny low-resource corpora cannot always fill the requested size
        byte_fallback=True,  # unseen characters become UTF-8 bytes instead of <unk>
        unk_id=0,
        bos_id=-1,  # Whisper's own <|startoftranscript|> and <|endoftext|> take these roles
        eos_id=-1,
        pad_id=-1,
        normalization_rule_name="identity",  # like Whisper's byte BPE: text normalisation is the data pipeline's job
        minloglevel=2,
    )
    return model_prefix.with_name(model_prefix.name + ".model")


class SentencePieceWhisperTokenizer(TokenizerBase):
    """A SentencePiece vocabulary followed by Whisper's special tokens, with WhisperTokenizer's interface.

    `languages` are the codes that get <|code|> tokens; with none, the layout is that of an English-only
    Whisper (the start sequence is just <|startoftranscript|>). As with Whisper's BPE, decoded words
    start with a space: decode(encode("dobrý den")) == " dobrý den".
    """

    def __init__(
        self,
        model_file: str | Path,
        languages: Sequence[str] = (),
        *,
        language: str | None = None,
        task: str | None = None,
    ) -> None:
        bad = [code for code in languages if not code or not code.isascii() or "|" in code or ">" in code]
        if bad or len(set(languages)) != len(languages):
            raise ValueError(f"language codes must be unique, non-empty ASCII without '|' or '>': {list(languages)}")
        self.model_proto = Path(model_file).read_bytes()
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        n_pieces = self.processor.get_piece_size()
        super().__init__(n_pieces, languages, multilingual=bool(languages), language=language, task=task)
        # Bytes of every id, so that decoding keeps leading spaces and cuts characters like byte BPE does.
        self._bytes = tuple(self._piece_bytes(i) for i in range(n_pieces)) + tuple(
            text.encode() for text in special_token_strings(self.all_language_codes)
        )

    def _piece_bytes(self, piece_id: int) -> bytes:
        piece = self.processor.id_to_piece(piece_id)
        if self.processor.is_byte(piece_id):
            return bytes([int(piece[1:-1], 16)])  # "<0xE2>"
        if self.processor.is_unknown(piece_id):
            return " \u2047 ".encode()  # SentencePiece's own rendering of <unk>
        if self.processor.is_control(piece_id) or self.processor.is_unused(piece_id):
            return b""
        return piece.replace("\u2581", " ").encode()

    def encode(self, text: str) -> list[int]:
        """SentencePiece ids of `text`."""
        return self.processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, leaving out special tokens and timestamps."""
        return b"".join(self._bytes[i] for i in ids if i < self.eot).decode("utf-8", errors="replace")

    def decode_with_timestamps(self, ids: Sequence[int]) -> str:
        """The text of `ids` with special tokens and timestamps written out, e.g. "<|1.08|>"."""
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def _symbol_token(self, text: str, first_of_many: bool) -> int | None:
        # Only whole pieces: the first byte-fallback piece of a music sign (0xE2) also starts
        # dashes and curly quotes, so suppressing it would not be safe here.
        piece_id = self.processor.piece_to_id(text.replace(" ", "\u2581"))
        return None if piece_id == self.processor.unk_id() or self.processor.is_byte(piece_id) else piece_id

    def save(self, directory: str | Path) -> None:
        """Write spm.model and the tokenizer description (kind, languages, sizes) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self.model_proto)
        config = {
            "kind": "sentencepiece",
            "model": MODEL_FILE,
            "languages": list(self.all_language_codes),
            "n_pieces": self.eot,
            "n_vocab": self.n_vocab,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(
        cls, directory: str | Path, *, language: str | None = None, task: str | None = None
    ) -> SentencePieceWhisperTokenizer:
        """Read a tokenizer written by `save`."""
        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
        if config.get("kind") != "sentencepiece":
            raise ValueError(f"{directory}/{CONFIG_FILE} does not describe a SentencePiece tokenizer")
        tokenizer = cls(Path(directory) / config["model"], config["languages"], language=language, task=task)
        if tokenizer.n_vocab != config["n_vocab"]:
            raise ValueError(f"{directory}: {config['model']} gives {tokenizer.n_vocab} tokens, config says {config['n_vocab']}")
        return tokenizer
