"""An n-gram model as the word scorer that beam search fuses in (inference.decoding.WordScorer):
decoded text normalised into words as the model's text was, scored in natural logarithms, the
unit of the decoder's log-probabilities (ln p = log10 p · ln 10)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from .kneser_ney import BOS, EOS, Ngram, NgramModel

LN10 = math.log(10)
# Entries of the score cache before it starts again: a long recording must not grow it without end.
CACHE_SIZE = 200_000


class NgramScorer:
    """`WordScorer` of an `NgramModel`: states are the last words (at most order - 1, cut to what
    the model can use), `words` splits decoded text into the model's words.

        scorer = NgramScorer(read_arpa("cs.arpa"), word_splitter("cs"))
    """

    def __init__(self, model: NgramModel, words: Callable[[str], list[str]]):
        self.model, self.words = model, words
        self._scores: dict[tuple[Ngram, str], tuple[float, int, Ngram]] = {}

    def start(self, context: str) -> Ngram:
        """The state after `context`; a sentence's start (<s>) when it has no words."""
        words = self.words(context)
        return self.model.state(words) if words else self.model.state((BOS,))

    def score(self, state: Ngram, text: str) -> tuple[float, int, Ngram]:
        """(ln p of the words of `text` after `state`, their number, the state after them)."""
        key = (state, text)
        found = self._scores.get(key)
        if found is None:
            words = self.words(text)
            history, log10 = state, 0.0
            for word in words:
                log10 += self.model.log10_prob(word, history)
                history = self.model.state((*history, word))
            found = (log10 * LN10, len(words), history)
            if len(self._scores) >= CACHE_SIZE:
                self._scores.clear()
            self._scores[key] = found
        return found

    def end(self, state: Ngram) -> float:
        """ln p(</s> | state)."""
        return self.model.log10_prob(EOS, state) * LN10


def vocabulary_overlap(model: NgramModel, texts: Iterable[str], words: Callable[[str], list[str]]) -> float:
    """The share (0..1) of the words of `texts` (each occurrence counted) that the model knows."""
    vocabulary = model.vocabulary()
    found = [w in vocabulary for text in texts for w in words(text)]
    return sum(found) / len(found) if found else 1.0
