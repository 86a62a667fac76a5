"""Export a checkpoint for other Whisper runtimes, in one command:

  whisper-scratch export MODEL_PATH --to ct2 OUT       CTranslate2 folder: faster-whisper loads it
  whisper-scratch export MODEL_PATH --to hf OUT        Hugging Face folder: transformers loads it, and
                                                       ct2-transformers-converter and whisper.cpp's
                                                       convert-h5-to-ggml.py read it
  whisper-scratch export MODEL_PATH --to openai OUT.pt OpenAI .pt for openai-whisper

MODEL_PATH is anything transcribe.py loads. LoRA adapters are merged; a noise branch is refused
unless --drop_noise_branch; a model with its own SentencePiece vocabulary (trained from scratch)
stays in our format, since the other runtimes tokenize with Whisper's BPE only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..common.messages import one_line
from ..common.precision import DTYPES
from ..model.export import (DEFAULT_DTYPE, FORMATS, INT8_REFUSED, ExportError, check_destination, check_vocabulary,
                            export_model)
from ..model.loaded import LoadedModel, ModelError
from ..tokenizer import tokenizer_beside

USAGE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="whisper-scratch export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_path", help="checkpoint to export (ours, OpenAI .pt, Hugging Face or CTranslate2)")
    p.add_argument("--to", required=True, choices=list(FORMATS), help="ct2, hf or openai")
    p.add_argument("out", help="folder to create (ct2, hf) or .pt file (openai)")
    p.add_argument("--dtype", choices=[*DTYPES, "int8"], default=None,
                   help="weights' precision (default fp16 for ct2, as faster-whisper's models; fp32 otherwise)")
    p.add_argument("--drop_noise_branch", "--drop-noise-branch", action="store_true",
                   help="export a dual-attention model without its noise branch (no other runtime has one)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder / over a .pt file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 written, 2 refused or failed)."""
    args = parse_args(argv)
    out = Path(args.out)
    dtype = args.dtype or DEFAULT_DTYPE[args.to]
    if dtype == "int8":
        print(f"error: --dtype int8: {INT8_REFUSED}", file=sys.stderr)
        return USAGE
    try:
        check_destination(args.to, out, args.overwrite)
        tokenizer = tokenizer_beside(args.model_path)
        if tokenizer is not None:
            check_vocabulary(tokenizer, args.to)  # before the weights are read
        loaded = LoadedModel.load(args.model_path, dtype="fp32")
        export_model(loaded.model, args.to, out, loaded.tokenizer, DTYPES[dtype], args.drop_noise_branch,
                     loaded.language)
    except ExportError as e:
        print(f"error: cannot export {args.model_path}: {e}", file=sys.stderr)
        return USAGE
    except (ModelError, ValueError, OSError) as e:  # each names its file
        print(f"error: {one_line(e)}", file=sys.stderr)
        return USAGE
    print(f"wrote {out} ({FORMATS[args.to]}, {dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
