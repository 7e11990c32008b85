"""Interpolated modified Kneser-Ney n-gram estimation, written as a backoff ARPA model.

No maintained library available offline builds an ARPA file from text (``kaldilm`` only
compiles ARPA into FSTs; KenLM's ``lmplz`` needs a source build with Boost), so the counting
and smoothing live here, in the form KenLM's ``lmplz`` and SRILM's ``-kndiscount
-interpolate`` use (Chen & Goodman, "An Empirical Study of Smoothing Techniques for Language
Modeling", 1998):

- the highest order uses raw counts, lower orders continuation counts ``N1+(. w)`` (the
  number of distinct words seen before ``w``), except n-grams starting with ``<s>``, which
  have no left context and keep their raw counts;
- three discounts per order, ``D1, D2, D3+``, from the count-of-counts ``n1..n4`` of that
  order (``Y = n1 / (n1 + 2 n2)``, ``Dk = k - (k + 1) Y n_{k+1} / n_k``); an order whose
  count-of-counts do not give discounts in ``(0, k]`` uses ``(0.5, 1.0, 1.5)`` (KenLM's
  ``--discount_fallback``);
- ``p(w | h) = max(c(hw) - D(c(hw)), 0) / c(h.) + gamma(h) p(w | h')`` with
  ``gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h.)``; the unigrams interpolate
  with the uniform distribution over the vocabulary (every word given, ``</s>``, ``<unk>``).

Written as ARPA, a seen n-gram carries its interpolated probability and a context ``h``
the backoff weight ``gamma(h)`` (exact for interpolated Kneser-Ney: an unseen ``hw`` has
``p(w | h) = gamma(h) p(w | h')``). Sentences are word lists (here SentencePiece pieces).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
LOG10_ZERO = -99.0  # ARPA's log10 probability of <s>, which is never predicted


@dataclass
class NgramModel:
    """``probs[n - 1]``: ``{ngram tuple: log10 p}`` of order n; ``backoffs``: ``{context: log10
    gamma}``; ``counts``: n-grams per order; ``discounts[n - 1]``: ``(D1, D2, D3+)``."""

    order: int
    probs: list[dict[tuple[str, ...], float]]
    backoffs: dict[tuple[str, ...], float]
    discounts: list[tuple[float, float, float]]

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.probs]


def discounts_of(count_of_counts: Counter) -> tuple[float, float, float]:
    """Modified Kneser-Ney ``(D1, D2, D3+)`` from ``{count: number of n-grams}`` (see module doc)."""
    n = [count_of_counts.get(k, 0) for k in (1, 2, 3, 4)]
    if min(n) == 0:
        return FALLBACK_DISCOUNTS
    y = n[0] / (n[0] + 2 * n[1])
    d = tuple(k - (k + 1) * y * n[k] / n[k - 1] for k in (1, 2, 3))
    if not all(0.0 < dk <= k for k, dk in zip((1, 2, 3), d, strict=True)):
        return FALLBACK_DISCOUNTS
    return d  # type: ignore[return-value]


def estimate(sentences: Iterable[Sequence[str]], order: int, vocabulary: Iterable[str] = ()) -> NgramModel:
    """Interpolated modified Kneser-Ney model of ``order`` over ``sentences`` (word lists,
    without ``<s>``/``</s>``). ``vocabulary``: words that get a unigram even if unseen."""
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    raw: Counter = Counter()
    for words in sentences:
        padded = (BOS, *words, EOS)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                raw[padded[i : i + n]] += 1
    # adjusted counts: raw at the top order and for n-grams starting with <s>, else N1+(. w)
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    for gram, c in raw.items():
        n = len(gram)
        if n == order or gram[0] == BOS:
            adjusted[n - 1][gram] = c
    for gram in raw:
        if len(gram) >= 2:
            suffix = gram[1:]
            if suffix[0] != BOS:
                adjusted[len(suffix) - 1][suffix] += 1
    adjusted[0].pop((BOS,), None)
    words = {g[0] for g in adjusted[0]} | {w for w in vocabulary if w != BOS} | {EOS, UNK}
    discounts = [discounts_of(Counter(adjusted[n].values())) for n in range(order)]
    probs: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order)]
    backoffs: dict[tuple[str, ...], float] = {}
    # unigrams
    total = sum(adjusted[0].values())
    d1 = discounts[0]
    if total > 0:
        mass = sum(d1[min(c, 3) - 1] for c in adjusted[0].values() if c > 0) / total
    else:
        mass = 1.0
    lower: dict[tuple[str, ...], float] = {}
    for w in words:
        c = adjusted[0].get((w,), 0)
        p = (max(c - d1[min(c, 3) - 1], 0.0) / total if c > 0 else 0.0) + mass / len(words)
        lower[(w,)] = p
        probs[0][(w,)] = math.log10(p)
    probs[0][(BOS,)] = LOG10_ZERO
    # higher orders, grouped by context
    for n in range(2, order + 1):
        d = discounts[n - 1]
        by_context: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for gram, c in adjusted[n - 1].items():
            by_context[gram[:-1]].append((gram[-1], c))
        current: dict[tuple[str, ...], float] = {}
        for context, followers in by_context.items():
            c_total = sum(c for _, c in followers)
            gamma = sum(d[min(c, 3) - 1] for _, c in followers) / c_total
            backoffs[context] = math.log10(gamma) if gamma > 0 else LOG10_ZERO
            for w, c in followers:
                p = max(c - d[min(c, 3) - 1], 0.0) / c_total + gamma * _backed_off(lower, backoffs, context[1:], w)
                current[(*context, w)] = p
                probs[n - 1][(*context, w)] = math.log10(p)
        lower.update(current)
    return NgramModel(order=order, probs=probs, backoffs=backoffs, discounts=discounts)


def _backed_off(lower: dict, backoffs: dict, context: tuple[str, ...], word: str) -> float:
    """``p(word | context)`` (a probability) from the already estimated lower orders."""
    weight = 1.0
    while True:
        gram = (*context, word)
        if gram in lower:
            return weight * lower[gram]
        weight *= 10.0 ** backoffs.get(context, 0.0)
        context = context[1:]
