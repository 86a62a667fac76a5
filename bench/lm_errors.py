"""The word errors of evaluations, by kind (docs/lm.md): what an LM fixed and what is left.

  python bench/lm_errors.py --lm runs/lm_czech/cs_train_text.arpa --language cs \
      runs/lm_czech/test_beam_5.json "runs/lm_czech/test_beam_5__LM_train__text.json" --sample 12

Each file is a `transcribe.py --mode evaluate --output_file` report. Both sides are normalised as
WER scoring normalises them, each utterance is aligned alone (jiwer, as the WER counts it), and
every edit gets one kind:

  deleted     a reference word with nothing in its place
  inserted    a hypothesis word with no reference word
  diacritics  a substitution that is the reference once accents are removed (vidím / vidim)
  word form   the same stem, another ending: a shared prefix of at least 4 letters and at least
              half the shorter word (koníka / koník)
  spelling    at most 2 letters apart (edit distance) and at most a third of the longer word, and
              not the kinds above (vydíš / vidíš; not to / toho)
  other       another word

Substitutions and deletions also count whether the reference word is in the LM's vocabulary: a
word the LM has never seen is one it cannot favour. Prints a table per file and a seeded sample of
each file's remaining errors; --json keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import jiwer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.evaluation.metrics import scored_pairs  # noqa: E402
from whisper_scratch.evaluation.normalizers import remove_symbols_and_diacritics  # noqa: E402
from whisper_scratch.lm.arpa import read_arpa  # noqa: E402

KINDS = ("deleted", "inserted", "diacritics", "word form", "spelling", "other")


def substitution_kind(reference: str, hypothesis: str) -> str:
    if remove_symbols_and_diacritics(reference) == remove_symbols_and_diacritics(hypothesis):
        return "diacritics"
    shared = len(os.path.commonprefix([reference, hypothesis]))
    if shared >= 4 and shared >= min(len(reference), len(hypothesis)) / 2:
        return "word form"
    letters = jiwer.process_characters(reference, hypothesis)
    distance = letters.substitutions + letters.deletions + letters.insertions
    if distance <= 2 and 3 * distance <= max(len(reference), len(hypothesis)):
        return "spelling"
    return "other"


def word_errors(reference: str, hypothesis: str) -> list[tuple[str, str, str]]:
    """(kind, reference word, hypothesis word) of every edit of one normalised pair."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return [("inserted", "", w) for w in hyp]
    if not hyp:
        return [("deleted", w, "") for w in ref]
    edits = []
    for chunk in jiwer.process_words(reference, hypothesis).alignments[0]:
        r, h = ref[chunk.ref_start_idx:chunk.ref_end_idx], hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "substitute":
            edits += [(substitution_kind(a, b), a, b) for a, b in zip(r, h)]
        elif chunk.type == "delete":
            edits += [("deleted", a, "") for a in r]
        elif chunk.type == "insert":
            edits += [("inserted", "", b) for b in h]
    return edits


def analyse(report: dict, language: str, vocabulary: set[str] | None) -> dict:
    """Counts by kind, reference words, unknown-to-the-LM reference words among the edits, and
    every edit with its utterance."""
    utterances = report["utterances"]
    pairs = scored_pairs([u["reference"] for u in utterances], [u["hypothesis"] for u in utterances], language)
    counts: Counter = Counter()
    words, unknown, edits = 0, 0, []
    for u, (reference, hypothesis) in zip(utterances, pairs):
        words += len(reference.split())
        for kind, r, h in word_errors(reference, hypothesis):
            counts[kind] += 1
            unknown += bool(r and vocabulary is not None and r not in vocabulary)
            edits.append({"kind": kind, "reference_word": r, "hypothesis_word": h,
                          "reference": u["reference"], "hypothesis": u["hypothesis"]})
    return {"words": words, "errors": sum(counts.values()), "kinds": {k: counts[k] for k in KINDS},
            "unknown_to_lm": unknown if vocabulary is not None else None, "edits": edits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", type=Path, nargs="+", help="transcribe.py --mode evaluate reports")
    p.add_argument("--language", required=True)
    p.add_argument("--lm", type=Path, help="ARPA model whose vocabulary the reference words are looked up in")
    p.add_argument("--sample", type=int, default=10, help="remaining errors shown per report (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the counts and every edit here")
    args = p.parse_args(argv)
    vocabulary = read_arpa(args.lm).vocabulary() if args.lm else None
    analyses = {str(path): analyse(json.loads(path.read_text()), args.language, vocabulary) for path in args.reports}
    print("| report | reference words | errors | " + " | ".join(KINDS) + " | reference word unknown to the LM |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in KINDS) + " | ---: |")
    for path, a in analyses.items():
        unknown = "" if a["unknown_to_lm"] is None else str(a["unknown_to_lm"])
        print(f"| {Path(path).name} | {a['words']} | {a['errors']} | "
              + " | ".join(str(a["kinds"][k]) for k in KINDS) + f" | {unknown} |")
    for path, a in analyses.items():
        print(f"\n{Path(path).name}: a sample of {min(args.sample, len(a['edits']))} errors\n")
        print("| kind | reference word | hypothesis word | reference | hypothesis |\n| --- | --- | --- | --- | --- |")
        for e in random.Random(args.seed).sample(a["edits"], min(args.sample, len(a["edits"]))):
            print(f"| {e['kind']} | {e['reference_word']} | {e['hypothesis_word']} | {e['reference']} | {e['hypothesis']} |")
    if args.json:
        args.json.write_text(json.dumps(analyses, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
