"""Corpus-level word and character error rates.

Both rates are total edits (substitutions + deletions + insertions) over the total number of
reference units across all utterances, not an average of per-utterance rates, and are returned
as fractions (0.034), not percent.

An utterance whose reference is empty (after normalisation, e.g. "[noise]") is kept out of
jiwer, which older versions reject; each word (or character) of its hypothesis counts as one
insertion and it adds nothing to the reference total.

Compounds are scored as one word however they are written: when consecutive words on one side
("mail box", "re record" from "re-record", "m i s d n") spell a word of the other side ("mailbox",
"rerecord", "misdn"), they are joined before scoring. English writes compounds open, hyphenated
or closed without a rule, and the speech is the same. Three kinds of run join:
- letters ("mail box" = "mailbox");
- single digits against a digit string ("5 0 0", Whisper's "5-0-0", = "500"): a number written in
  digits does not say how it was read, and extensions and PINs are read digit by digit (the
  price: "one two" against "twelve" also matches once the normaliser has written both in digits);
- a code of letters and digits ("h 323" from "H.323" = "h323", "mp 3" = "mp3").
Other runs do not: "50 0" against "500" stays a substitution and an insertion.
"""
from __future__ import annotations

from typing import Callable

import jiwer

from .normalizers import get_normalizer

MAX_COMPOUND_PARTS = 10  # longest run of words joined into one (a phone number read digit by digit)


def _error_rate(references: list[str], hypotheses: list[str], normalizer: Callable[[str], str] | None,
                characters: bool) -> float:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    normalize = normalizer or (lambda text: text)
    # Whitespace is collapsed either way, so that CER does not count doubled spaces.
    pairs = [join_compounds(normalize(r).split(), normalize(h).split()) for r, h in zip(references, hypotheses)]

    def units(text: str) -> int:
        return len(text) if characters else len(text.split())

    errors = sum(units(h) for r, h in pairs if not r)
    scored = [(r, h) for r, h in pairs if r]
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


def _joinable(parts: list[str], joined: str) -> bool:
    if joined.isalpha():
        return True
    if joined.isdigit():
        return all(len(part) == 1 for part in parts)
    return joined.isalnum() and any(ch.isdigit() for ch in joined)


def _join_against(words: list[str], other: set[str]) -> list[str]:
    out, i = [], 0
    while i < len(words):
        for n in range(min(MAX_COMPOUND_PARTS, len(words) - i), 1, -1):
            joined = "".join(words[i:i + n])
            if joined in other and _joinable(words[i:i + n], joined):
                out.append(joined)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out


def join_compounds(reference: list[str], hypothesis: list[str]) -> tuple[str, str]:
    """Both word lists as text, with runs of words that spell one word of the other side joined
    (see the module docstring): (["mail", "box"], ["mailbox"]) -> ("mailbox", "mailbox")."""
    ref = _join_against(reference, set(hypothesis))
    return " ".join(ref), " ".join(_join_against(hypothesis, set(ref)))


def wer(references: list[str], hypotheses: list[str], normalizer: Callable[[str], str] | None = None) -> float:
    """Word error rate; `normalizer` is applied to both sides (None: compare the text as given)."""
    return _error_rate(references, hypotheses, normalizer, characters=False)


def cer(references: list[str], hypotheses: list[str], normalizer: Callable[[str], str] | None = None) -> float:
    """Character error rate (spaces between words count as characters)."""
    return _error_rate(references, hypotheses, normalizer, characters=True)


def error_rates(references: list[str], hypotheses: list[str], language: str | None) -> dict[str, float]:
    """{"wer": ..., "cer": ...} after the normaliser for `language` (see get_normalizer)."""
    normalizer = get_normalizer(language)
    return {"wer": wer(references, hypotheses, normalizer), "cer": cer(references, hypotheses, normalizer)}
