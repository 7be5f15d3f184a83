"""Recall@k of a search against exact MaxSim, counting tied pages as equals.

A corpus that holds a page twice (the ``duplicated`` family, or a user's folder ingested twice)
has exact ties: which twin a search returns at the 10th place is a tie-break, not a miss.
A returned page counts when its exact score reaches the ``k``-th best exact score, so recall
is 1 exactly when the search returns *a* correct top ``k``; without ties this is the usual
set overlap with the exact top ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Relative tolerance for two float32 MaxSim sums of the same page to count as equal (the
#: exact scores and a search's rerank may add the same terms in a different order).
TIE_TOLERANCE = 1e-5


def recall_at_k(found: Sequence[int], exact_scores: np.ndarray, k: int) -> float:
    """The share of ``k`` places in ``found`` (page indexes, best first) holding a page whose
    exact score reaches the ``k``-th best of ``exact_scores`` (one query's, over every page).

    >>> recall_at_k([0, 2], np.array([3.0, 2.0, 2.0, 1.0]), 2)   # page 2 ties page 1
    1.0
    >>> recall_at_k([0, 3], np.array([3.0, 2.0, 2.0, 1.0]), 2)
    0.5
    """
    exact_scores = np.asarray(exact_scores, dtype=np.float64)
    k = min(k, exact_scores.size)
    kth = np.partition(exact_scores, exact_scores.size - k)[exact_scores.size - k]
    floor = kth - TIE_TOLERANCE * abs(kth)
    return sum(1 for page in list(found)[:k] if exact_scores[page] >= floor) / k


def same_score(page: int, target: int, exact_scores: np.ndarray) -> bool:
    """Whether ``page`` scores as the planted ``target`` does: the target itself or its twin."""
    a, b = float(exact_scores[page]), float(exact_scores[target])
    return abs(a - b) <= TIE_TOLERANCE * max(abs(a), abs(b))
