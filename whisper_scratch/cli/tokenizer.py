"""Train a SentencePiece vocabulary with Whisper's special tokens, for a model trained from scratch:

  whisper-scratch tokenizer train --manifest FILE --out DIR --vocab-size N [--language xx ...]

FILE is a .txt (one sentence a line), .jsonl ({"text": ...}), .csv (a text column) or Common
Voice .tsv (its sentence column).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..data.manifest import read_texts
from ..tokenizer.sentencepiece_tokenizer import MODEL_TYPES, SentencePieceWhisperTokenizer, train_sentencepiece


def train(args: argparse.Namespace) -> None:
    texts = read_texts(args.manifest)
    print(f"read {len(texts)} transcripts ({sum(map(len, texts))} characters) from {args.manifest}", flush=True)
    print(f"training a {args.model_type} SentencePiece model with up to {args.vocab_size} pieces", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        model = train_sentencepiece(texts, Path(scratch) / "spm", args.vocab_size, args.model_type, args.character_coverage)
        tokenizer = SentencePieceWhisperTokenizer(model, args.language)
    tokenizer.save(args.out)
    n_tokens = sum(len(tokenizer.encode(text)) for text in texts)
    print(
        f"saved {args.out}: {tokenizer.eot} pieces + {tokenizer.n_vocab - tokenizer.eot} special tokens = "
        f"{tokenizer.n_vocab}; languages {list(tokenizer.all_language_codes)}; "
        f"{n_tokens / len(texts):.1f} tokens per transcript"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whisper-scratch tokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("train", help="train a SentencePiece tokenizer with Whisper's special tokens")
    command.add_argument("--manifest", type=Path, required=True,
                         help=".txt, .jsonl with \"text\", .csv with text, or Common Voice .tsv")
    command.add_argument("--out", type=Path, required=True, help="folder for spm.model and its description")
    command.add_argument("--vocab-size", type=int, required=True, help="SentencePiece pieces, 256 byte pieces included")
    command.add_argument("--language", action="append", default=[], help="language code with a <|xx|> token; repeatable")
    command.add_argument("--model-type", choices=MODEL_TYPES, default="unigram")
    command.add_argument("--character-coverage", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        train(args)
    except (OSError, ValueError, RuntimeError) as error:  # SentencePiece reports bad settings as RuntimeError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
