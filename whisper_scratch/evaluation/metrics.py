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

from .lenient import join_compounds, lenient_normalizer
from .normalizers import get_normalizer

SCORINGS = ("standard", "lenient")


def _error_rate(pairs: list[tuple[str, str]], characters: bool) -> float:
    def units(text: str) -> int:
        return len(text.strip()) if characters else len(text.split())

    errors = sum(units(h) for r, h in pairs if not r.split())
    scored = [(r, h) for r, h in pairs if r.split()]
    total = sum(units(r) for r, _ in scored)
    if scored:
        process = jiwer.process_characters if characters else jiwer.process_words
        out = process([r for r, _ in scored], [h for _, h in scored])
        errors += out.substitutions + out.deletions + out.insertions
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


def error_rates(references: list[str], hypotheses: list[str], language: str | None,
                scoring: str = "standard") -> dict[str, float]:
    """{"wer": ..., "cer": ...} scored for `language` ("en": English rules; None or any other code:
    the basic ones); `scoring` is "standard" (openai-whisper's rules, plain jiwer) or "lenient"."""
    if scoring == "standard":
        pairs = _normalized_pairs(references, hypotheses, get_normalizer(language))
    elif scoring == "lenient":
        pairs = [join_compounds(r.split(), h.split())
                 for r, h in _normalized_pairs(references, hypotheses, lenient_normalizer(language))]
    else:
        raise ValueError(f"unknown scoring {scoring!r}: choose from {', '.join(SCORINGS)}")
    return {"wer": _error_rate(pairs, characters=False), "cer": _error_rate(pairs, characters=True)}
