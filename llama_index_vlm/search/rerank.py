"""Exact rerank of approximate candidates, as deep as the scores say it must go.

An approximate first stage (pooled codes, sign codes) orders pages roughly; the exact rerank
of its best candidates fixes the order. How many candidates are enough depends on the corpus:
where the top pages' exact scores are near-ties, pages the first stage placed low can still
belong to the top ``k``. A fixed depth is either wasted (clear-cut corpora) or too shallow
(near-tie corpora): measured on corpora built independently of the tuning one, a fixed depth
of 100 kept only 0.83 of the exact top 10 (issue 15).

:func:`adaptive_rerank` lets the scores decide. It reranks the ``min_depth`` best candidates
(pages with equal approximate scores, such as a page stored twice, counting once), then looks
at how far the exact scores of those pages sit above their approximate ones (the *residual*,
``exact - approximate``), takes the largest residual seen (plus ``slack`` times its spread)
as the most an unseen page could gain, and reranks every further candidate whose
approximate score plus that gain reaches the ``k``-th best exact score so far. It repeats
while the newly reranked pages widen the residual, up to ``max_depth``. On a clear-cut corpus
it stops after ``min_depth``; on a near-tie one it goes deeper, only as far as needed.

Example:
    >>> import numpy as np
    >>> pages = [np.full((2, 2), v, dtype=np.float32) for v in (0.5, 0.4, 0.45, 0.05)]
    >>> fetch = lambda ids: [pages[i] for i in ids]   # exact scores: 1.0, 0.8, 0.9, 0.1
    >>> approximate = [0.9, 0.8, 0.7, 0.1]            # a rough, best-first order
    >>> result = adaptive_rerank(np.ones((1, 2)), [0, 1, 2, 3], approximate, 2, fetch, min_depth=2)
    >>> result.page_ids, result.n_reranked           # page 2 was worth a look, page 3 not
    ([0, 2], 3)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llama_index_vlm.search.maxsim import ArrayLike, PageVectorMatrix, maxsim_scores, top_k

#: Fetches the full ``(n_patches, dim)`` vectors of the given pages, in the given order.
RerankFn = Callable[[list[Hashable]], "Sequence[ArrayLike] | PageVectorMatrix"]

#: Candidates reranked before the scores are looked at.
DEFAULT_MIN_DEPTH = 32

#: The most candidates one query reranks, however flat the scores.
DEFAULT_MAX_DEPTH = 512

#: Extra gain allowed for unseen pages, as a share of the spread of the residuals seen.
DEFAULT_SLACK = 0.25

#: Page vectors per product when the rerank runs on one thread: 4 ColPali pages, 2 MiB of
#: float32 rows, which stay in the core's cache between their widening and their product.
#: maxsim_scores' own blocks (12,288 rows and more) suit a thread team, whose every block is
#: a few parallel regions to wake; on one thread there is none, and at 10k pages a search
#: alone ran 43-45 instead of 36-41 a second, two processes searching at once 84-90 instead of
#: 66-76 (``benchmarks/RESULTS.md``, issue 15). None: maxsim_scores' blocks always.
ONE_THREAD_BLOCK_ROWS: int | None = 4096


@dataclass(frozen=True)
class RerankResult:
    """The best pages by exact MaxSim, and how deep the rerank went.

    Attributes:
        page_ids: the best ``k`` pages, best first.
        scores: their exact MaxSim scores (float32).
        n_reranked: candidates whose full vectors were read and scored.
        exhausted: whether the stopping rule wanted more than ``max_depth`` candidates
            (the result may then miss pages the first stage placed below that depth).
    """

    page_ids: list[Hashable]
    scores: np.ndarray
    n_reranked: int
    exhausted: bool


def _fetch_scores(query: np.ndarray, page_ids: list[Hashable], rerank_fn: RerankFn) -> np.ndarray:
    vectors = rerank_fn(page_ids)
    n_fetched = vectors.n_pages if isinstance(vectors, PageVectorMatrix) else len(vectors)
    if n_fetched != len(page_ids):
        raise ValueError(f"rerank_fn returned {n_fetched} pages for {len(page_ids)} ids")
    return maxsim_scores(query, vectors, block_size=rerank_block_size())[0]


def rerank_block_size() -> int | None:
    """Page vectors per product in a rerank from this thread: :data:`ONE_THREAD_BLOCK_ROWS`
    where its torch products run on one thread, else None (``maxsim_scores``' own)."""
    return ONE_THREAD_BLOCK_ROWS if torch.get_num_threads() == 1 else None


def first_round_depth(approximate: np.ndarray, n_distinct: int) -> int:
    """How many of the best-first ``approximate`` candidates hold ``n_distinct`` different
    scores, each score's candidates all included (all of them if there are fewer scores).

    A page stored twice (a file ingested twice, a cover page in every report) has the same
    codes, so the same approximate and exact scores: its twin tells the stopping rule nothing
    new about how far exact scores sit above approximate ones. Counting distinct scores keeps
    the first round's sample of that gap as large with duplicates as without.

    >>> first_round_depth(np.array([5.0, 5.0, 4.0, 3.0, 3.0, 2.0]), 3)
    5
    """
    if n_distinct < 1:
        return 0
    changes = np.flatnonzero(approximate[1:] != approximate[:-1])
    if changes.size < n_distinct:  # n different scores have n - 1 changes between them
        return int(approximate.size)
    return int(changes[n_distinct - 1]) + 1


def required_depth(
    approximate: np.ndarray, exact: np.ndarray, k: int, slack: float = DEFAULT_SLACK
) -> int:
    """How many of the best-first ``approximate`` candidates the rule wants, given the exact
    scores of the first ``exact.size`` of them.

    Unseen candidate ``j`` may still enter the top ``k`` if ``approximate[j] + gain`` reaches
    the ``k``-th best exact score seen, where ``gain`` is the largest residual
    ``exact - approximate`` seen plus ``slack`` times the residuals' spread. Candidates are
    best first, so those are a prefix: the answer is its length (at least ``exact.size``).
    """
    seen = exact.size
    if seen >= approximate.size:
        return seen
    if seen < k:
        return min(k, approximate.size)
    residual = exact - approximate[:seen]
    gain = float(residual.max() + slack * (residual.max() - residual.min()))
    kth = float(np.partition(exact, seen - k)[seen - k])
    # approximate is sorted descending: count the unseen ones at or above kth - gain.
    unseen = approximate[seen:]
    return seen + int(np.count_nonzero(unseen >= kth - gain))


def adaptive_rerank(
    query_vectors: ArrayLike,
    candidate_ids: Sequence[Hashable],
    approximate_scores: ArrayLike,
    k: int,
    rerank_fn: RerankFn,
    *,
    min_depth: int = DEFAULT_MIN_DEPTH,
    max_depth: int = DEFAULT_MAX_DEPTH,
    slack: float = DEFAULT_SLACK,
) -> RerankResult:
    """The ``k`` best candidates by exact MaxSim, reranking only as deep as needed.

    Args:
        query_vectors: ``(n_query_tokens, dim)`` float32 query.
        candidate_ids: candidates, best first by ``approximate_scores``.
        approximate_scores: the first stage's scores of the candidates, descending, on a
            scale comparable to exact MaxSim (e.g. MaxSim over pooled codes).
        k: pages to return.
        rerank_fn: ``rerank_fn(page_ids)`` returns those pages' full vectors in that order;
            called once per round, with the round's new candidates only.
        min_depth: candidates reranked in the first round (at least ``k``); candidates with
            equal approximate scores count once (see :func:`first_round_depth`).
        max_depth: the most candidates reranked in all; ``>= len(candidate_ids)`` allows all.
        slack: see :func:`required_depth`; 0 trusts the largest residual seen exactly.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    candidate_ids = list(candidate_ids)
    approximate = np.asarray(approximate_scores, dtype=np.float32)
    if approximate.shape != (len(candidate_ids),):
        raise ValueError(f"{approximate.shape} approximate scores for {len(candidate_ids)} ids")
    if not candidate_ids:
        return RerankResult([], np.zeros(0, dtype=np.float32), 0, False)
    query = np.ascontiguousarray(query_vectors, dtype=np.float32)
    n = len(candidate_ids)
    max_depth = max(max_depth, k)
    depth = min(first_round_depth(approximate, max(min_depth, k)), max_depth)
    exact = _fetch_scores(query, candidate_ids[:depth], rerank_fn)
    exhausted = False
    while depth < n:
        wanted = required_depth(approximate, exact, k, slack)
        if wanted > max_depth:
            exhausted = True
            wanted = max_depth
        if wanted <= depth:
            break
        more = _fetch_scores(query, candidate_ids[depth:wanted], rerank_fn)
        exact = np.concatenate([exact, more])
        depth = wanted
    order, values = top_k(exact, k)
    return RerankResult([candidate_ids[i] for i in order], values, depth, exhausted)


def rerank_exactly(
    query_vectors: ArrayLike, candidate_ids: list[Hashable], k: int, rerank_fn: RerankFn
) -> tuple[list[Hashable], np.ndarray]:
    """The ``k`` best of ``candidate_ids`` by exact MaxSim, best first: ``(page_ids, scores)``.

    A fixed-depth rerank: every candidate is read and scored (see :func:`adaptive_rerank`
    for one that reads only as deep as the scores call for).

    Args:
        query_vectors: ``(n_query_tokens, dim)`` query multi-vector.
        candidate_ids: pages to rank (e.g. from :meth:`FastPageIndex.candidates`).
        k: number of pages to return.
        rerank_fn: ``rerank_fn(page_ids)`` returns those pages' full vectors in that order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not candidate_ids:
        return [], np.zeros(0, dtype=np.float32)
    query = np.ascontiguousarray(query_vectors, dtype=np.float32)
    order, values = top_k(_fetch_scores(query, candidate_ids, rerank_fn), k)
    return [candidate_ids[i] for i in order], values
