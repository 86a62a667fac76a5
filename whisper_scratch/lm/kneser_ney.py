"""Interpolated modified Kneser-Ney estimation of a word n-gram model (Chen & Goodman 1998, the
estimate KenLM's `lmplz` makes), with count pruning, into an `NgramModel` that holds what an ARPA
file holds: log10 probabilities and back-off weights.

Counts: the highest order uses raw counts; a lower order uses continuation counts (how many
different words precede the n-gram), except n-grams that start with <s>, which nothing precedes.
Each order has three discounts D1, D2, D3+ from its count-of-counts. Then, with c the adjusted
count and h' the context h without its first word,

    p(w | h) = (c(h w) - D(c(h w))) / c(h ·)  +  γ(h) · p(w | h'),
    γ(h)     = (Σ_kept D(c(h v)) + Σ_pruned c(h v)) / c(h ·),

and the unigrams are interpolated with the uniform distribution over the vocabulary (<unk>
included, <s> not: it is never predicted). A pruned n-gram's whole count moves into γ(h), so
γ(h) is exactly the back-off weight that makes every context's distribution sum to one in the
ARPA reading (p(w | h) = γ(h) · p(w | h') for the w that have no n-gram after h).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Ngram = tuple[str, ...]
# log10 p of <s> (listed, never predicted) and of <unk> in a model that lacks it: ARPA's and KenLM's choices.
NEVER = -99.0
MISSING_UNK = -100.0
# Used when an order's count-of-counts give discounts outside (0, k]: tiny or artificial text (KenLM's
# --discount_fallback values).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass
class NgramModel:
    """probs[n - 1][ngram] = log10 p(last word | the words before); backoffs[n - 1][ngram] = log10
    of the back-off weight of the n-gram as a context (absent: 0, as in ARPA)."""

    order: int
    probs: list[dict[Ngram, float]] = field(default_factory=list)
    backoffs: list[dict[Ngram, float]] = field(default_factory=list)

    def log10_prob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 p(word | history) in the ARPA reading: the longest n-gram the model has, plus the
        back-off weights of the longer contexts it skipped. A word outside the vocabulary scores
        as <unk>."""
        if (word,) not in self.probs[0]:
            word = UNK
        history = self._last(history)
        backoff = 0.0
        for start in range(len(history)):
            context = history[start:]
            found = self.probs[len(context)].get((*context, word))
            if found is not None:
                return backoff + found
            backoff += self.backoffs[len(context) - 1].get(context, 0.0)
        return backoff + self.probs[0].get((word,), MISSING_UNK)  # MISSING_UNK: <unk> in a model without it

    def state(self, history: Sequence[str]) -> Ngram:
        """The shortest suffix of `history` that predicts every next word as `history` does: the
        longest one that is an n-gram of the model (a longer context has no n-grams after it and
        a back-off weight of 0), at most order - 1 words."""
        history = self._last(history)
        for start in range(len(history)):
            if history[start:] in self.probs[len(history) - start - 1]:
                return history[start:]
        return ()

    def _last(self, history: Sequence[str]) -> Ngram:
        """The last order - 1 words of `history`: all that can condition a word."""
        return tuple(history[-(self.order - 1):]) if self.order > 1 else ()

    def counts(self) -> list[int]:
        """The number of n-grams of each order."""
        return [len(p) for p in self.probs]

    def vocabulary(self) -> set[str]:
        """The words it knows, <s>, </s> and <unk> left out."""
        return {g[0] for g in self.probs[0]} - {BOS, EOS, UNK}


def discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    """D1, D2, D3+ of one order from its adjusted counts (Chen & Goodman's estimate from the
    count-of-counts n1..n4); `FALLBACK_DISCOUNTS` when the text is too small for the formula."""
    n = Counter(min(c, 4) for c in counts)
    n1, n2, n3, n4 = (n[k] for k in (1, 2, 3, 4))
    if not (n1 and n2 and n3 and n4):
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    found = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d <= k for d, k in zip(found, (1, 2, 3))):
        return FALLBACK_DISCOUNTS
    return found


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter]:
    """raw[n - 1][ngram]: how often each n-gram (n <= order) occurs in the sentences, each read
    as <s> words </s>; <s> alone is not counted (it is never predicted)."""
    raw: list[Counter] = [Counter() for _ in range(order)]
    for words in sentences:
        padded = (BOS, *words, EOS)
        for n in range(1, order + 1):
            counter = raw[n - 1]
            for i in range(len(padded) - n + 1):
                counter[padded[i:i + n]] += 1
    raw[0].pop((BOS,), None)
    return raw


def prune_thresholds(prune: Sequence[int], order: int) -> list[int]:
    """KenLM's --prune: one threshold per order (the last repeats), n-grams seen that many times
    or fewer dropped; unigrams are never pruned and the thresholds may not decrease, so that
    every kept n-gram keeps its context and its suffix."""
    if not prune:
        return [0] * order
    if prune[0] != 0:
        raise ValueError(f"unigrams cannot be pruned: the first --prune value must be 0, got {prune[0]}")
    if any(b < a for a, b in zip(prune, prune[1:])) or min(prune) < 0:
        raise ValueError(f"--prune thresholds must be non-negative and non-decreasing, got {list(prune)}")
    return [prune[min(n, len(prune) - 1)] for n in range(order)]


def estimate(raw: list[Counter], prune: Sequence[int] = ()) -> NgramModel:
    """The modified Kneser-Ney model of the raw counts of `count_ngrams` (its order is theirs),
    with `prune_thresholds(prune)` applied. Values are rounded to the 7 significant digits an
    ARPA file keeps, so that writing and reading the model back gives it exactly."""
    order = len(raw)
    if order < 1 or not raw[0]:
        raise ValueError("no words in the text: nothing to estimate a language model from")
    thresholds = prune_thresholds(prune, order)
    adjusted = _adjusted_counts(raw)
    probs: list[dict[Ngram, float]] = [{} for _ in range(order)]  # linear until the end
    backoffs: list[dict[Ngram, float]] = [{} for _ in range(order)]
    vocab_size = len(raw[0]) + (UNK not in {g[0] for g in raw[0]})  # every predicted word, <unk> too
    for n in range(order):
        d = discounts(adjusted[n].values())
        total: dict[Ngram, int] = defaultdict(int)
        mass: dict[Ngram, float] = defaultdict(float)  # the part of c(h ·) left to γ(h)
        kept = {}
        for gram, c in adjusted[n].items():
            h = gram[:-1]
            total[h] += c
            if raw[n][gram] > thresholds[n]:
                discount = d[min(c, 3) - 1]
                kept[gram] = c - discount
                mass[h] += discount
            else:
                mass[h] += c
        gamma = {h: mass[h] / t for h, t in total.items()}
        if n == 0:
            uniform = gamma[()] / vocab_size
            probs[0] = {g: share / total[()] + uniform for g, share in kept.items()}
            probs[0].setdefault((UNK,), uniform)
        else:
            # Closure under suffixes (non-decreasing thresholds) puts p(w | h') in probs[n - 1].
            probs[n] = {g: share / total[g[:-1]] + gamma[g[:-1]] * probs[n - 1][g[1:]] for g, share in kept.items()}
            for h, weight in gamma.items():
                if h in probs[n - 1] or h == (BOS,):
                    backoffs[n - 1][h] = weight
    model = NgramModel(order, [{g: _arpa_value(math.log10(p)) for g, p in level.items()} for level in probs],
                       [{g: _arpa_value(math.log10(w)) for g, w in level.items() if w != 1.0} for level in backoffs])
    model.probs[0][(BOS,)] = NEVER
    return model


def _adjusted_counts(raw: list[Counter]) -> list[Counter]:
    """Kneser-Ney's counts: raw at the highest order and for n-grams that start with <s>; below
    the highest order, otherwise, the number of different words seen before the n-gram."""
    order = len(raw)
    adjusted = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for n in range(order - 1):
        adjusted[n] = Counter(g[1:] for g in raw[n + 1])
        adjusted[n].update({g: c for g, c in raw[n].items() if g[0] == BOS})
    return adjusted


def _arpa_value(x: float) -> float:
    """`x` rounded to the 7 significant digits ARPA files keep."""
    return float(f"{x:.7g}")
