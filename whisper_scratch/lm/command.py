"""Build an n-gram language model of a language from its text, for shallow fusion into beam search
(`transcribe.py --beam_size 5 --lm LM.arpa`, docs/lm.md):

  python -m whisper_scratch.lm build --text FILE [--text FILE ...] --language LANG --order N --out LM.arpa[.gz]
  whisper-scratch lm build ...                   (the same, once installed)
  whisper-scratch lm info LM.arpa                (its n-gram counts; checks that it reads)

A FILE is a .txt (one sentence a line), a .jsonl ({"text": ...} a line), a .csv (its text column)
or a Common Voice .tsv (its sentence column). Text is normalised as WER scoring normalises LANG
(English rules for en, the basic ones otherwise). Estimation is interpolated modified Kneser-Ney;
--prune 0 1 drops the bigrams and longer seen only once (KenLM's --prune). The model is a
standard ARPA file (gzip-compressed when OUT ends in .gz), which KenLM reads too.

The command lives in the lm package (not cli/) so that `python -m whisper_scratch.lm` needs no
layer above it; `whisper-scratch lm` dispatches here.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ..common.files import unwritable
from ..data.manifest import ManifestError
from .arpa import ArpaError, read_arpa, write_arpa
from .kneser_ney import count_ngrams, estimate, prune_thresholds
from .text import read_sentences

MAX_ORDER = 10


class CommandError(Exception):
    """A bad argument or input: one "error: ..." line, exit status 2."""


def build(args: argparse.Namespace) -> None:
    """Read, count, estimate, write; print what was built."""
    if not 1 <= args.order <= MAX_ORDER:
        raise CommandError(f"--order must be between 1 and {MAX_ORDER}, got {args.order} (3 to 5 is usual)")
    try:
        prune_thresholds(args.prune, args.order)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if problem := unwritable(args.out):
        raise CommandError(f"--out {args.out}: {problem}")
    started = time.perf_counter()
    n_sentences = n_words = 0

    def counted(sentences: Iterator[list[str]]) -> Iterator[list[str]]:
        nonlocal n_sentences, n_words
        for words in tqdm(sentences, desc="reading", unit=" sentences", disable=not args.progress):
            n_sentences += 1
            n_words += len(words)
            yield words

    try:
        raw = count_ngrams(counted(read_sentences(args.text, args.language)), args.order)
    except ManifestError as e:
        raise CommandError(str(e)) from None
    if not n_words:
        raise CommandError(f"{', '.join(map(str, args.text))}: no words after normalisation; nothing to build from")
    print(f"read {n_sentences} sentences, {n_words} words ({len(raw[0]) - 1} different) from "
          f"{len(args.text)} file{'s' * (len(args.text) > 1)}, normalised for '{args.language}'", file=sys.stderr)
    model = estimate(raw, args.prune)
    del raw
    try:
        write_arpa(model, args.out)
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror or e}") from None
    counts = ", ".join(f"{n}-grams {c}" for n, c in enumerate(model.counts(), 1))
    print(f"wrote {args.out}: order {model.order}, {counts}; {_size(Path(args.out).stat().st_size)}, "
          f"built in {time.perf_counter() - started:.1f} s")


def info(args: argparse.Namespace) -> None:
    """Print a model's order, counts and vocabulary size (and so prove it reads)."""
    try:
        model = read_arpa(args.lm)
    except ArpaError as e:
        raise CommandError(str(e)) from None
    counts = ", ".join(f"{n}-grams {c}" for n, c in enumerate(model.counts(), 1))
    print(f"{args.lm}: order {model.order}, {counts}; {len(model.vocabulary())} words")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="whisper-scratch lm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="estimate a modified Kneser-Ney n-gram model from text, as ARPA")
    b.add_argument("--text", type=Path, action="append", required=True,
                   help=".txt (one sentence a line), .jsonl, .csv or Common Voice .tsv; repeatable")
    b.add_argument("--language", required=True,
                   help="language code of the text (en, cs, ...): picks the normaliser WER scoring uses")
    b.add_argument("--order", type=int, default=4, help="n-gram order (default 4)")
    b.add_argument("--out", type=Path, required=True, help="the ARPA file to write (.arpa, or .arpa.gz to compress)")
    b.add_argument("--prune", type=int, nargs="+", default=[], metavar="COUNT",
                   help="per order, drop n-grams seen at most COUNT times (the last value repeats; the first, "
                        "for unigrams, must be 0; non-decreasing), e.g. --prune 0 1 for big corpora")
    b.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    i = commands.add_parser("info", help="read an ARPA model and print its counts")
    i.add_argument("lm", type=Path, help="an ARPA file (.arpa or .arpa.gz)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit status (0, or 2 for bad arguments and inputs)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        {"build": build, "info": info}[args.command](args)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    return 0
