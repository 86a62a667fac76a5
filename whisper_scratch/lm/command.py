"""Build an n-gram language model of a language from its text, for shallow fusion into beam search
(`transcribe.py --beam_size 5 --lm LM.arpa`, docs/lm.md):

  python -m whisper_scratch.lm build --text FILE [--text FILE ...] --language LANG --order N --out LM.arpa[.gz]
  whisper-scratch lm build ...                   (the same, once installed)
  whisper-scratch lm info LM.arpa                (its n-gram counts; checks that it reads)
  whisper-scratch lm tune --model_path M --lm LM.arpa --manifest dev.tsv --language LANG
                                                 (lm_alpha and lm_beta searched on a dev split)

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
from functools import partial
from pathlib import Path

from tqdm import tqdm

from ..common.files import unwritable, write_json
from ..data.hf_dataset import read_dataset_texts
from ..data.manifest import ManifestError, read_manifest
from .arpa import ArpaError, read_arpa, write_arpa
from .fusion import BACKENDS
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

    sources: list = list(args.text)
    if args.dataset:
        sources.append(partial(read_dataset_texts, args.dataset, args.split, config=args.dataset_config,
                               text_column=args.text_column))
    named = [*map(str, args.text), *([f"{args.dataset} [{args.split}]"] if args.dataset else [])]
    if not named:
        raise CommandError("give the text to build from: --text FILE (repeatable) and/or --dataset NAME")
    try:
        raw = count_ngrams(counted(read_sentences(sources, args.language)), args.order)
    except ManifestError as e:
        raise CommandError(str(e)) from None
    if not n_words:
        raise CommandError(f"{', '.join(named)}: no words after normalisation; nothing to build from")
    print(f"read {n_sentences} sentences, {n_words} words ({len(raw[0]) - 1} different) from "
          f"{len(named)} source{'s' * (len(named) > 1)}, normalised for '{args.language}'", file=sys.stderr)
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


def tune(args: argparse.Namespace) -> None:
    """Search lm_alpha and lm_beta on a dev listing; print the table, then the flags to use."""
    import torch  # torch and the model only for this command

    from ..model.loaded import LoadedModel, ModelError
    from . import tune as tuning
    from .fusion import read_lm, scorer_for, vocabulary_overlap

    alphas, betas = tuple(args.alphas or tuning.ALPHAS), tuple(args.betas or tuning.BETAS)
    for flag, values in (("--alphas", alphas), ("--betas", betas)):
        if list(values) != sorted(set(values)):
            raise CommandError(f"{flag} must be distinct values in ascending order, got {' '.join(map(str, values))}")
    if min(alphas) < 0:
        raise CommandError(f"--alphas must not be negative (an LM weighed below zero favours unlikely words), "
                           f"got {min(alphas)}")
    for flag, value in (("--beam_size", args.beam_size), ("--budget", args.budget), ("--batch_size", args.batch_size),
                        ("--max_clips", args.max_clips or 1)):
        if value < 1:
            raise CommandError(f"{flag} must be at least 1, got {value}")
    if args.save and not Path(args.model_path).is_dir():
        raise CommandError(f"--save stores the pair beside a checkpoint folder; {args.model_path} is not one")
    if args.output and (problem := unwritable(args.output)):
        raise CommandError(f"--output {args.output}: {problem}")
    try:
        rows = read_manifest(args.manifest)[:args.max_clips]
    except ManifestError as e:
        raise CommandError(str(e)) from None
    if not rows:
        raise CommandError(f"{args.manifest} lists no utterances")
    try:
        lm = read_lm(args.lm, args.lm_backend)
    except ArpaError as e:
        raise CommandError(f"--lm: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        loaded = LoadedModel.load(args.model_path, device=args.device, dtype=args.dtype)
        language = loaded.language_code(args.language)
    except (FileNotFoundError, ModelError) as e:
        raise CommandError(f"--model_path {args.model_path}: {e}") from None
    if language is None and loaded.is_multilingual:
        raise CommandError("give --language, the language of the LM's text and of the listing")
    scorer = scorer_for(lm, language)
    share = vocabulary_overlap(scorer, [r.text for r in rows])
    print(f"tuning on {len(rows)} clips of {args.manifest}; the LM knows {share:.0%} of their words", file=sys.stderr)
    dev = tuning.DevSplit(loaded, rows, language, tuning.default_options(language, args.beam_size, args.batch_size))
    baseline = dev.trial(None, 0.0, 0.0)
    print(f"  no LM (beam {args.beam_size}): WER {baseline.wer * 100:.2f} %, CER {baseline.cer * 100:.2f} % "
          f"({baseline.seconds:.0f} s, encoding included)", file=sys.stderr)
    with tqdm(total=args.budget, desc="tuning", unit=" trial") as bar:
        def run(alpha: float, beta: float) -> tuning.Trial:
            t = dev.trial(scorer, alpha, beta)
            bar.update(1)
            bar.write(f"  lm_alpha {alpha:g}, lm_beta {beta:g}: WER {t.wer * 100:.2f} %, CER {t.cer * 100:.2f} % "
                      f"({t.seconds:.0f} s)", file=sys.stderr)
            return t
        trials = tuning.search(run, alphas, betas, args.budget, whole_grid=args.grid)
    best = tuning.best_trial([baseline, *trials])
    print(tuning.format_table([baseline, *trials]))
    if args.output:
        write_json(args.output, tuning.report(trials, baseline))
    if args.save:
        stored = tuning.write_stored(Path(args.model_path), best, args.lm, str(args.manifest), args.beam_size)
        print(f"stored in {stored}: transcribe.py --lm uses it when --lm_alpha / --lm_beta are not given",
              file=sys.stderr)
    if not best.fused:
        print(f"no pair tried lowers the dev WER below plain beam search ({baseline.wer * 100:.2f} %): this LM does "
              "not help this model here; leave --lm out (or try other --alphas/--betas)")
    else:
        print(f"dev WER {baseline.wer * 100:.2f} % -> {best.wer * 100:.2f} % with the LM")
    print(f"--lm_alpha {best.alpha:g} --lm_beta {best.beta:g}")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="whisper-scratch lm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="estimate a modified Kneser-Ney n-gram model from text, as ARPA")
    b.add_argument("--text", type=Path, action="append", default=[],
                   help=".txt (one sentence a line), .jsonl, .csv or Common Voice .tsv; repeatable")
    b.add_argument("--dataset", help="also the transcripts of a Hugging Face dataset (a save_to_disk folder, "
                                     "shards, an audiofolder or a Hub name; needs the [datasets] extra)")
    b.add_argument("--split", default="train", help="--dataset's split (default train)")
    b.add_argument("--dataset_config", "--dataset-config", help="--dataset's Hub configuration")
    b.add_argument("--text_column", "--text-column",
                   help="--dataset's transcript column (default: text, sentence, transcription or transcript)")
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
    t = commands.add_parser("tune", help="search lm_alpha and lm_beta on a dev split")
    t.add_argument("--model_path", "--model-path", required=True, help="the model to tune for (any checkpoint "
                                                                       "transcribe.py loads)")
    t.add_argument("--lm", type=Path, required=True, help="the ARPA model to fuse")
    t.add_argument("--manifest", "--reference_file", "--reference-file", dest="manifest", type=Path, required=True,
                   help="the dev listing (.jsonl, .csv or Common Voice .tsv), never the test split")
    t.add_argument("--language", help="the language of the LM and the listing (needed for multilingual models)")
    t.add_argument("--lm_backend", "--lm-backend", choices=BACKENDS, default="python",
                   help="read and query the LM with our ARPA reader or KenLM (as transcribe.py --lm_backend)")
    t.add_argument("--beam_size", "--beam-size", type=int, default=5, help="beam width (default 5)")
    t.add_argument("--alphas", type=float, nargs="+", default=None, metavar="A",
                   help="lm_alpha values to try, ascending (default 0.05 0.1 0.15 0.25 0.35 0.5 0.75)")
    t.add_argument("--betas", type=float, nargs="+", default=None, metavar="B",
                   help="lm_beta values to try, ascending (default -0.5 0 0.5 1 1.5 2 3)")
    t.add_argument("--grid", action="store_true",
                   help="try every pair (row by row) instead of a pattern search from the middle of the grid")
    t.add_argument("--budget", type=int, default=16, help="most fused trials, each a decoding of the split "
                                                          "(default 16)")
    t.add_argument("--max_clips", "--max-clips", type=int, default=None,
                   help="tune on the listing's first N clips only (faster, noisier)")
    t.add_argument("--batch_size", "--batch-size", type=int, default=8, help="clips decoded together (default 8)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument("--dtype", default=None, help="as transcribe.py --dtype")
    t.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    t.add_argument("--output", type=Path, help="write every trial and the best pair to this JSON file")
    t.add_argument("--save", action="store_true",
                   help="store the best pair as lm_fusion.json in the model folder: transcribe.py --lm uses it "
                        "when --lm_alpha / --lm_beta are not given")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit status (0, or 2 for bad arguments and inputs)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        {"build": build, "info": info, "tune": tune}[args.command](args)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    return 0
