"""Corpus-level word and character error rates.

Both rates are total edits (substitutions + deletions + insertions) over the total number of
reference units across all utterances, not an average of per-utterance rates, and are returned
as fractions (0.034), not percent.

`error_rates` scores the way the field does by default (`scoring="standard"`): openai-whisper's
normaliser rules for the language (whisper_scratch.normalizers), then plain jiwer. Words are
what whitespace separates; characters include the spaces between words. `scoring="lenient"` is
the opt-in alternative of whisper_scratch.lenient (our normaliser, compounds joined); its figures
are lower and not comparable with published ones.

An utterance whose reference is empty after normalisation (e.g. "[noise]") counts each word (or
character) of its hypothesis as an insertion and adds nothing to the reference total, as jiwer 4
does; it is kept out of jiwer itself, since older versions reject empty references.
"""
from __future__ import annotations

from typing import Callable

import jiwer
import numpy as np

from .lenient import join_compounds, lenient_normalizer
from .normalizers import get_normalizer

SCORINGS = ("standard", "lenient")


def _edit_counts(pairs: list[tuple[str, str]], characters: bool) -> list[tuple[int, int]]:
    """(edits, reference units) of each (reference, hypothesis) pair, words or characters."""
    def units(text: str) -> int:
        return len(text.strip()) if characters else len(text.split())

    counts = [(units(h), 0) for _, h in pairs]  # an empty reference: every hypothesis unit is inserted
    scored = [i for i, (r, _) in enumerate(pairs) if r.split()]
    if scored:
        process = jiwer.process_characters if characters else jiwer.process_words
        out = process([pairs[i][0] for i in scored], [pairs[i][1] for i in scored])
        for i, chunks in zip(scored, out.alignments):
            edits = sum(c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else c.ref_end_idx - c.ref_start_idx
                        for c in chunks if c.type != "equal")
            counts[i] = (edits, units(pairs[i][0]))
    return counts


def _error_rate(pairs: list[tuple[str, str]], characters: bool) -> float:
    counts = _edit_counts(pairs, characters)
    errors, total = sum(e for e, _ in counts), sum(n for _, n in counts)
    if total == 0:
        if errors:
            raise ValueError("every reference is empty, so the error rate is undefined")
        return 0.0
    return errors / total


def _normalized_pairs(references: list[str], hypotheses: list[str],
                      normalizer: Callable[[str], str] | None) -> list[tuple[str, str]]:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    normalize = normalizer or (lambda text: text)
    # Whitespace runs collapse to one space, so CER does not count doubled spaces.
    return [(" ".join(normalize(r).split()), " ".join(normalize(h).split())) for r, h in zip(references, hypotheses)]


def wer(references: list[str], hypotheses: list[str], normalizer: Callable[[str], str] | None = None) -> float:
    """Word error rate; `normalizer` is applied to both sides (None: compare the text as given)."""
    return _error_rate(_normalized_pairs(references, hypotheses, normalizer), characters=False)


def cer(references: list[str], hypotheses: list[str], normalizer: Callable[[str], str] | None = None) -> float:
    """Character error rate (spaces between words count as characters)."""
    return _error_rate(_normalized_pairs(references, hypotheses, normalizer), characters=True)


def scored_pairs(references: list[str], hypotheses: list[str], language: str | None,
                 scoring: str = "standard") -> list[tuple[str, str]]:
    """Each (reference, hypothesis) as WER/CER `scoring` compares them: normalised for `language`,
    whitespace collapsed (lenient scoring also joins compounds)."""
    if scoring == "standard":
        return _normalized_pairs(references, hypotheses, get_normalizer(language))
    if scoring == "lenient":
        return [join_compounds(r.split(), h.split())
                for r, h in _normalized_pairs(references, hypotheses, lenient_normalizer(language))]
    raise ValueError(f"unknown scoring {scoring!r}: choose from {', '.join(SCORINGS)}")


def error_rates(references: list[str], hypotheses: list[str], language: str | None,
                scoring: str = "standard") -> dict[str, float]:
    """{"wer": ..., "cer": ...} scored for `language` ("en": English rules; None or any other code:
    the basic ones); `scoring` is "standard" (openai-whisper's rules, plain jiwer) or "lenient"."""
    pairs = scored_pairs(references, hypotheses, language, scoring)
    return {"wer": _error_rate(pairs, characters=False), "cer": _error_rate(pairs, characters=True)}


def utterance_word_errors(references: list[str], hypotheses: list[str], language: str | None,
                          scoring: str = "standard") -> list[tuple[int, int]]:
    """(word edits, reference words) per utterance, scored as error_rates scores: their sums
    give its WER."""
    return _edit_counts(scored_pairs(references, hypotheses, language, scoring), characters=False)


def error_reduction_interval(errors_a: list[int], errors_b: list[int], resamples: int = 2000, seed: int = 0,
                             level: float = 0.95) -> dict[str, float]:
    """How many fewer word errors system b makes than system a, relative to a's, with a paired
    bootstrap interval: utterances are resampled with replacement, both systems on the same draw.
    errors_a[i], errors_b[i]: the errors of each system on utterance i. Returns {"reduction",
    "low", "high"} as fractions (0.21 = 21 % fewer); a draw where a makes no error is skipped."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need one error count per utterance for both systems, got {a.shape} and {b.shape}")
    if not a.sum():
        raise ValueError("system a makes no errors, so a relative reduction is undefined")
    draws = np.random.default_rng(seed).integers(len(a), size=(resamples, len(a)))
    sum_a, sum_b = a[draws].sum(axis=1), b[draws].sum(axis=1)
    kept = sum_a > 0
    reductions = 1 - sum_b[kept] / sum_a[kept]
    tail = (1 - level) / 2
    return {"reduction": float(1 - b.sum() / a.sum()), "low": float(np.quantile(reductions, tail)),
            "high": float(np.quantile(reductions, 1 - tail))}
