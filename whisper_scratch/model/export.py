"""Our model written for other Whisper runtimes: CTranslate2 (faster-whisper), Hugging Face
(transformers, and through it whisper.cpp) and OpenAI's .pt. LoRA adapters are merged; a noise
branch is refused unless dropped; a model with its own SentencePiece vocabulary stays in our
format, since the other runtimes tokenize with Whisper's BPE only. The command line is
`cli/export.py`."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..common.precision import DTYPES
from ..tokenizer import TokenizerBase, WhisperTokenizer
from ..tokenizer.base import normalize_language
from .formats.ctranslate2 import save_ctranslate2
from .formats.huggingface import save_huggingface
from .formats.openai import save_openai
from .loaded import whisper_vocabulary
from .lora import LoRALinear, merge_lora
from .quantize import is_quantized
from .whisper import Whisper

FORMATS = {"ct2": "CTranslate2", "hf": "Hugging Face", "openai": "OpenAI"}
# faster-whisper's models are float16; the others keep a fine-tune's float32 weights unrounded.
DEFAULT_DTYPE = {"ct2": "fp16", "hf": "fp32", "openai": "fp32"}
# Why no int8 file is written: CTranslate2 quantizes a float model as it loads it.
INT8_REFUSED = ("quantized weights are not exported: export the float model (--dtype fp16 for ct2, fp32 for hf and "
                "openai); faster-whisper runs a float model in int8 with compute_type='int8'")


class ExportError(Exception):
    """A model or destination that cannot be exported as asked; the message is one line."""


def _plain(model: Whisper) -> Whisper:
    """`model` with any LoRA adapters folded into its weights (on a copy: the caller's model is kept)."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        return merge_lora(copy.deepcopy(model))
    return model


def check_vocabulary(tokenizer: TokenizerBase, to: str) -> WhisperTokenizer:
    """`tokenizer` if it is Whisper's BPE; other runtimes know no other vocabulary."""
    if not isinstance(tokenizer, WhisperTokenizer):
        raise ExportError(f"the model has its own {type(tokenizer).__name__.removesuffix('WhisperTokenizer')} "
                          f"vocabulary (trained from scratch), which {FORMATS[to]} runtimes cannot tokenize with "
                          "(they know Whisper's BPE only): keep it in our format and run it with "
                          "transcribe.py / whisper-scratch transcribe")
    return tokenizer


def export_model(model: Whisper, to: str, out: str | Path, tokenizer: TokenizerBase | None = None,
                 dtype: torch.dtype | None = None, drop_noise_branch: bool = False,
                 language: str | None = None) -> Path:
    """Write `model` in format `to` ("ct2", "hf" or "openai") at `out` (a folder; a .pt file for
    openai). `tokenizer` defaults to Whisper's BPE for the model's vocabulary; `language` (a
    fine-tune's) becomes the Hugging Face default. Returns `out`."""
    if to not in FORMATS:
        raise ExportError(f"unknown export format {to!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if is_quantized(model):
        raise ExportError(f"the model was quantized for running here (--quantize); {INT8_REFUSED}")
    model = _plain(model)
    tk = check_vocabulary(tokenizer or whisper_vocabulary(model), to)
    if tk.n_vocab != model.dims.n_vocab:
        raise ExportError(f"the model has {model.dims.n_vocab} token embeddings but Whisper's "
                          f"{'multilingual' if tk.is_multilingual else 'English'} vocabulary has {tk.n_vocab} "
                          "tokens, so no other runtime could decode it")
    dtype = dtype or DTYPES[DEFAULT_DTYPE[to]]
    if language is not None and tk.is_multilingual:
        language = normalize_language(language, tk.all_language_codes)
    if to == "ct2":
        save_ctranslate2(model, out, tk, dtype=dtype, drop_noise_branch=drop_noise_branch)
    elif to == "hf":
        save_huggingface(model, out, tk, dtype=dtype, drop_noise_branch=drop_noise_branch,
                         language=language if tk.is_multilingual else None)
    else:
        save_openai(model, out, dtype=dtype, drop_noise_branch=drop_noise_branch)
    return out


def check_destination(to: str, out: Path, overwrite: bool) -> None:
    if to == "openai":
        if out.suffix != ".pt":
            raise ExportError(f"{out}: the OpenAI format is one file; give a name ending in .pt")
        if out.exists() and not overwrite:
            raise ExportError(f"{out} exists; choose another name or add --overwrite")
    elif out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ExportError(f"{out} exists and is {'not a folder' if not out.is_dir() else 'not empty'}; "
                          f"choose a new folder{'' if not out.is_dir() else ' or add --overwrite'}")
