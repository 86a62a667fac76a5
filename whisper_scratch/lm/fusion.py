"""An n-gram model as the word scorer that beam search fuses in (inference.decoding.WordScorer):
decoded text normalised into words as the model's text was, scored in natural logarithms, the
unit of the decoder's log-probabilities (ln p = log10 p · ln 10)."""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from ..common.messages import one_line
from .arpa import ArpaError, read_arpa
from .kneser_ney import BOS, EOS, Ngram, NgramModel
from .text import word_splitter

LN10 = math.log(10)
# Entries of the score cache before it starts again: a long recording must not grow it without end.
CACHE_SIZE = 200_000


class CachedScorer:
    """What both scorers share: `score` splits text into words and walks them from a state,
    remembering the answer (beams ask for the same words after the same history many times).
    Subclasses give `words`, `_step(state, word) -> (log10 p, next state)` and `knows(word)`."""

    words: Callable[[str], list[str]]

    def __init__(self) -> None:
        self._scores: dict[tuple[Hashable, str], tuple[float, int, Hashable]] = {}

    def _step(self, state: Hashable, word: str) -> tuple[float, Hashable]:
        raise NotImplementedError

    def knows(self, word: str) -> bool:
        raise NotImplementedError

    def score(self, state: Hashable, text: str) -> tuple[float, int, Hashable]:
        """(ln p of the words of `text` after `state`, their number, the state after them)."""
        key = (state, text)
        found = self._scores.get(key)
        if found is None:
            words = self.words(text)
            log10 = 0.0
            for word in words:
                step, state = self._step(state, word)
                log10 += step
            found = (log10 * LN10, len(words), state)
            if len(self._scores) >= CACHE_SIZE:
                self._scores.clear()
            self._scores[key] = found
        return found

    def end(self, state: Hashable) -> float:
        """ln p(</s> | state)."""
        return self._step(state, EOS)[0] * LN10


class NgramScorer(CachedScorer):
    """`WordScorer` of an `NgramModel`: states are the last words (at most order - 1, cut to what
    the model can use), `words` splits decoded text into the model's words.

        scorer = NgramScorer(read_arpa("cs.arpa"), word_splitter("cs"))
    """

    def __init__(self, model: NgramModel, words: Callable[[str], list[str]]):
        super().__init__()
        self.model, self.words = model, words
        self._vocabulary = model.vocabulary()

    def start(self, context: str) -> Ngram:
        """The state after `context`; a sentence's start (<s>) when it has no words."""
        words = self.words(context)
        return self.model.state(words) if words else self.model.state((BOS,))

    def _step(self, state: Ngram, word: str) -> tuple[float, Ngram]:
        return self.model.log10_prob(word, state), self.model.state((*state, word))

    def knows(self, word: str) -> bool:
        return word in self._vocabulary


class KenlmScorer(CachedScorer):
    """`WordScorer` through KenLM's C++ query engine (`pip install kenlm`): the scores of
    `NgramScorer` up to KenLM's float32 storage, from a model that loads a large ARPA file (or a
    KenLM binary one) in a fraction of the time and memory of the Python tables."""

    def __init__(self, model: Any, words: Callable[[str], list[str]]):
        super().__init__()
        import kenlm  # the optional [kenlm] extra

        self._state, self.model, self.words = kenlm.State, model, words

    def start(self, context: str) -> Hashable:
        """The state after `context`; a sentence's start (<s>) when it has no words."""
        state = self._state()
        words = self.words(context)
        if not words:
            self.model.BeginSentenceWrite(state)
            return state
        self.model.NullContextWrite(state)
        for word in words:
            _, state = self._step(state, word)
        return state

    def _step(self, state: Hashable, word: str) -> tuple[float, Hashable]:
        after = self._state()
        return self.model.BaseScore(state, word, after), after

    def knows(self, word: str) -> bool:
        return word in self.model


BACKENDS = ("python", "kenlm")


def read_lm(path: str | Path, backend: str = "python") -> Any:
    """The LM in `path`, read by our ARPA reader ("python": an NgramModel) or by KenLM ("kenlm": a
    kenlm.Model, which also reads KenLM's binary files). ArpaError names the file when it cannot be
    read, and says how to install KenLM when it is asked for and missing."""
    if backend == "python":
        return read_arpa(path)
    if backend != "kenlm":
        raise ValueError(f"unknown LM backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if importlib.util.find_spec("kenlm") is None:
        raise ArpaError("the kenlm backend needs the kenlm module: pip install 'whisper-scratch[kenlm]' (it "
                        "compiles KenLM, a few minutes), or use the python backend")
    if not Path(path).is_file():
        raise ArpaError(f"language model not found: {path}")
    import kenlm

    try:
        return kenlm.Model(str(path))
    except (OSError, RuntimeError) as e:
        raise ArpaError(f"{path}: KenLM cannot read it ({one_line(e)})") from None


def scorer_for(lm: Any, language: str | None) -> NgramScorer | KenlmScorer:
    """The scorer of a model `read_lm` gave, for text in `language` (normalised as WER scoring
    normalises it: English rules for "en" and None, the basic ones otherwise)."""
    words = word_splitter(language or "en")
    return NgramScorer(lm, words) if isinstance(lm, NgramModel) else KenlmScorer(lm, words)


def vocabulary_overlap(scorer: CachedScorer, texts: Iterable[str]) -> float:
    """The share (0..1) of the words of `texts` (each occurrence counted) that the scorer's LM knows."""
    found = [scorer.knows(w) for text in texts for w in scorer.words(text)]
    return sum(found) / len(found) if found else 1.0
