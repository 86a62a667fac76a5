"""Command line: `python -m tokenizer train --manifest FILE --out DIR --vocab-size N [--language xx]`."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from .sentencepiece_tokenizer import MODEL_TYPES, SentencePieceWhisperTokenizer, train_sentencepiece


def read_manifest(path: Path) -> list[str]:
    """Transcripts from a .jsonl manifest ("text" field) or a Common Voice .tsv ("sentence" column)."""
    if path.suffix == ".jsonl":
        texts = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not JSON ({error})") from None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{number}: expected a JSON object with a string \"text\" field")
                texts.append(text)
    elif path.suffix == ".tsv":
        csv.field_size_limit(1 << 24)  # Common Voice sentences are short, but other TSVs may not be
        with path.open(encoding="utf-8", newline="") as rows:
            reader = csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE)
            if "sentence" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no \"sentence\" column in the header {reader.fieldnames}")
            texts = [row["sentence"] or "" for row in reader]
    else:
        raise ValueError(f"{path}: expected a .jsonl or .tsv manifest")
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError(f"{path}: no transcripts")
    return texts


def train(args: argparse.Namespace) -> None:
    texts = read_manifest(args.manifest)
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
    parser = argparse.ArgumentParser(prog="python -m tokenizer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("train", help="train a SentencePiece tokenizer with Whisper's special tokens")
    command.add_argument("--manifest", type=Path, required=True, help=".jsonl with \"text\" or Common Voice .tsv")
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
