"""Export a checkpoint for other Whisper runtimes, in one command:

  python -m whisper_scratch.export MODEL_PATH --to ct2 OUT      CTranslate2 folder: faster-whisper loads it
  python -m whisper_scratch.export MODEL_PATH --to hf OUT       Hugging Face folder: transformers loads it, and
                                                               ct2-transformers-converter and whisper.cpp's
                                                               convert-h5-to-ggml.py read it
  python -m whisper_scratch.export MODEL_PATH --to openai OUT.pt  OpenAI .pt for openai-whisper

(also `whisper-scratch export ...`). MODEL_PATH is anything transcribe.py loads. LoRA adapters are
merged; a noise branch is refused unless --drop_noise_branch; a model with its own SentencePiece
vocabulary (trained from scratch) stays in our format, since the other runtimes tokenize with
Whisper's BPE only.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from tokenizer import TokenizerBase, WhisperTokenizer
from tokenizer.base import normalize_language
from tokenizer.loading import tokenizer_beside

from .checkpoint import load_model
from .decoding import tokenizer_for
from .formats.ctranslate2 import save_ctranslate2
from .formats.huggingface import save_huggingface
from .formats.openai import save_openai
from .lora import LoRALinear, merge_lora
from .model import Whisper

FORMATS = {"ct2": "CTranslate2", "hf": "Hugging Face", "openai": "OpenAI"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# faster-whisper's models are float16; the others keep a fine-tune's float32 weights unrounded.
DEFAULT_DTYPE = {"ct2": "fp16", "hf": "fp32", "openai": "fp32"}
USAGE = 2


class ExportError(Exception):
    """A model or destination that cannot be exported as asked; the message is one line."""


def _plain(model: Whisper) -> Whisper:
    """`model` with any LoRA adapters folded into its weights (on a copy: the caller's model is kept)."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        return merge_lora(copy.deepcopy(model))
    return model


def _check_vocabulary(tokenizer: TokenizerBase, to: str) -> WhisperTokenizer:
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
    model = _plain(model)
    tk = _check_vocabulary(tokenizer or tokenizer_for(model), to)
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


def _check_destination(to: str, out: Path, overwrite: bool) -> None:
    if to == "openai":
        if out.suffix != ".pt":
            raise ExportError(f"{out}: the OpenAI format is one file; give a name ending in .pt")
        if out.exists() and not overwrite:
            raise ExportError(f"{out} exists; choose another name or add --overwrite")
    elif out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ExportError(f"{out} exists and is {'not a folder' if not out.is_dir() else 'not empty'}; "
                          f"choose a new folder{'' if not out.is_dir() else ' or add --overwrite'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m whisper_scratch.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_path", help="checkpoint to export (ours, OpenAI .pt, Hugging Face or CTranslate2)")
    p.add_argument("--to", required=True, choices=list(FORMATS), help="ct2, hf or openai")
    p.add_argument("out", help="folder to create (ct2, hf) or .pt file (openai)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="weights' precision (default fp16 for ct2, as faster-whisper's models; fp32 otherwise)")
    p.add_argument("--drop_noise_branch", "--drop-noise-branch", action="store_true",
                   help="export a dual-attention model without its noise branch (no other runtime has one)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder / over a .pt file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 written, 2 refused or failed)."""
    args = parse_args(argv)
    out = Path(args.out)
    try:
        _check_destination(args.to, out, args.overwrite)
        tokenizer = tokenizer_beside(args.model_path)
        if tokenizer is not None:
            _check_vocabulary(tokenizer, args.to)  # before the weights are read
        model = load_model(args.model_path)
        language = getattr(model, "checkpoint_extra", {}).get("language") or None
        export_model(model, args.to, out, tokenizer, DTYPES[args.dtype or DEFAULT_DTYPE[args.to]],
                     args.drop_noise_branch, language)
    except ExportError as e:
        print(f"error: cannot export {args.model_path}: {e}", file=sys.stderr)
        return USAGE
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError; both name their file
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return USAGE
    print(f"wrote {out} ({FORMATS[args.to]}, {args.dtype or DEFAULT_DTYPE[args.to]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
