"""Evaluation of a listing: which language its transcripts are scored in, WER/CER of each condition
(clean, then each SNR under noise), and the JSON report `transcribe.py --mode evaluate` writes."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from ..audio.noise import NoiseMixer
from ..data.manifest import Utterance
from ..inference.writers import write_evaluation
from ..tokenizer.base import normalize_language
from .noisy import ConditionScore, NoisyRun, noise_report, score_run


def listed_language(rows: Sequence[Utterance], known: Sequence[str]) -> str | None:
    """The one language every row of the listing names, when the model knows it: decoding in the
    known language beats detecting it per clip, which is unreliable on one-word clips."""
    listed = {r.language for r in rows}
    if len(listed) != 1 or None in listed:
        return None
    try:
        return normalize_language(listed.pop(), known)
    except ValueError:
        return None


def scoring_language(rows: Sequence[Utterance], results: Sequence[dict]) -> str | None:
    """The language that picks the text normaliser: the listing's, else the one detected most often."""
    listed = {r.language for r in rows if r.language}
    if len(listed) == 1:
        return listed.pop()
    detected = Counter(r["language"] for r in results if r.get("language"))
    return detected.most_common(1)[0][0] if detected else None


def score_runs(runs: Sequence[NoisyRun], rows: Sequence[Utterance], language: str | None,
               scoring: str = "standard") -> list[ConditionScore]:
    """WER/CER of each run (the clean one first) against the listing; an unreadable clip counts as
    an empty hypothesis. `language` None: the one `scoring_language` finds from the clean run."""
    language = language or scoring_language(rows, runs[0].results)
    return [score_run(run, rows, language, scoring) for run in runs]


def write_report(path: str | os.PathLike, scores: Sequence[ConditionScore], mixer: NoiseMixer | None) -> None:
    """{"wer", "cer", "utterances": [...]} of the clean run, with the noise settings and every
    condition when the listing was also scored under noise."""
    clean = scores[0]
    write_evaluation(path, clean.wer, clean.cer, clean.utterances, noise_report(mixer, scores) if mixer else None)
