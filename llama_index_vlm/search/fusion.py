"""Rank fusion: several rankings of the same items made into one, each item once.

Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009) scores an item by
``sum(1 / (k + rank))`` over the rankings it appears in (ranks from 1). It needs no score
calibration between rankings (MaxSim sums and BM25 scores live on unrelated scales), and an
item high in either ranking stays high.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

#: The rank offset of reciprocal rank fusion; 60 is the value of the paper and of most engines.
RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]], k: int = RRF_K
) -> list[tuple[Hashable, float]]:
    """``(item, fused score)`` for every item of ``rankings`` (each best first), best first.

    Items are matched by equality, so an item in several rankings appears once; equal scores
    keep the order of first appearance.

    >>> reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=1)
    [('a', 0.8333333333333333), ('c', 0.75), ('b', 0.3333333333333333)]
    """
    if k < 0:
        raise ValueError(f"k must be 0 or more, not {k}")
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
