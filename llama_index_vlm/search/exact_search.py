"""The exact top ``k`` pages by MaxSim, screened with float16 products.

Exact mode scores every page. Its pages are float16, and widening each block to float32
before the product cost as much as the product. Where the CPU multiplies float16 fast and
accumulates in float32
(:func:`~llama_index_vlm.search.code_scores.half_products_are_fast`), :func:`exact_top_k`
scores every page with float16 products, keeps the pages that a proven bound on their error
(:func:`~llama_index_vlm.search.code_scores.half_maxsim_error_bound`) leaves a chance of
the top ``k``, and rescores only those with float32 MaxSim. It returns the pages float32
MaxSim over every page returns, with their float32 scores (to the last bit: a page's float32
products may round differently in another block of pages, as they already did when the
corpus grew). Only the time differs: at 2,000 pages of 1,030 vectors, 123-134 ms a query
against 256-272 ms, and numpy float32's 262-267 ms (``benchmarks/search_threads.py``; through
the retriever 151-160 against 304-326 ms, ``benchmarks/retriever_exact.py``).

Example:
    >>> import numpy as np
    >>> pages = PageVectorMatrix.from_pages([np.eye(4, dtype=np.float16)[[i]] for i in range(4)])
    >>> positions, scores = exact_top_k(np.eye(4, dtype=np.float32)[[2, 3]], pages, 2)
    >>> positions.tolist(), scores.tolist()
    ([2, 3], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llama_index_vlm.search import code_scores
from llama_index_vlm.search.maxsim import PageVectorMatrix, maxsim_scores, tensor_view, top_k

#: Page vectors whose norms are read at a time (:func:`max_vector_norm`; 32 MiB widened).
_NORM_BLOCK_ROWS = 65_536

#: Above this vector norm float16 products could overflow: such pages are scored in float32.
_MAX_SCREENED_NORM = 1_000.0


def max_vector_norm(pages: PageVectorMatrix) -> float:
    """The largest norm of any page vector (rounded up), for the float16 error bound.

    One pass over the pages (about 0.13 s per 1,000 pages of 1,030 float16 vectors here: a
    cache should keep it, as :func:`page_vector_norms` lets it do page by page).
    """
    vectors = tensor_view(pages.vectors)
    largest = 0.0
    for start in range(0, vectors.shape[0], _NORM_BLOCK_ROWS):
        block = vectors[start : start + _NORM_BLOCK_ROWS]
        largest = max(largest, float(_row_norms(block).max()))
    return largest * (1 + 1e-6)


def page_vector_norms(pages: Sequence[np.ndarray]) -> np.ndarray:
    """Each page's largest vector norm (rounded up), ``(len(pages),)`` float32."""
    norms = [float(_row_norms(tensor_view(np.asarray(page))).max()) for page in pages]
    return np.array(norms, dtype=np.float32) * np.float32(1 + 1e-6)


def _row_norms(rows: torch.Tensor) -> torch.Tensor:
    if rows.shape[0] == 0:
        return torch.zeros(1)
    # Widening first is twice as fast as vector_norm(..., dtype=float32) of float16 rows.
    return torch.linalg.vector_norm(rows.float(), dim=1)


def exact_top_k(
    query_vectors: np.ndarray,
    pages: PageVectorMatrix,
    k: int,
    *,
    keep: np.ndarray | None = None,
    vector_norm: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best pages by float32 MaxSim, best first: ``(positions, scores)``.

    As :func:`~llama_index_vlm.search.maxsim.top_k` of :func:`maxsim_scores` (ties to the
    lower position); pages left out by ``keep`` score ``-inf``.

    Args:
        query_vectors: ``(n_tokens, dim)`` float32 query.
        pages: the pages to search.
        k: pages to return (all of them if fewer).
        keep: optional ``(n_pages,)`` bool mask of the pages that may be returned.
        vector_norm: :func:`max_vector_norm` of ``pages`` if already known (a cache keeps it);
            computed otherwise.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    query = np.ascontiguousarray(query_vectors, dtype=np.float32)
    if _screens(pages):
        if vector_norm is None:
            vector_norm = max_vector_norm(pages)
        if vector_norm <= _MAX_SCREENED_NORM:
            return _screened_top_k(query, pages, k, keep, vector_norm)
    scores = maxsim_scores(query, pages)[0]
    if keep is not None:
        scores = np.where(keep, scores, -np.inf).astype(np.float32)
    return top_k(scores, min(k, scores.size))


def _screens(pages: PageVectorMatrix) -> bool:
    """Whether float16 screening applies: float16 pages and fast float16 products."""
    return pages.vectors.dtype == np.float16 and code_scores.half_products_are_fast()


def _screened_top_k(
    query: np.ndarray, pages: PageVectorMatrix, k: int, keep: np.ndarray | None, vector_norm: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_top_k` by float16 screening, then float32 MaxSim of the pages that could
    rank."""
    screened = code_scores.half_maxsim_scores(query, pages)
    if keep is not None:
        screened[~keep] = -np.inf
    candidates = _could_rank(screened, k, code_scores.half_maxsim_error_bound(query, vector_norm))
    exact = np.full(pages.n_pages, -np.inf, dtype=np.float32)
    if candidates.size:
        chosen = [pages.page(int(position)) for position in candidates]
        exact[candidates] = maxsim_scores(query, chosen)[0]
    return top_k(exact, min(k, pages.n_pages))


def _could_rank(screened: np.ndarray, k: int, bound: float) -> np.ndarray:
    """Positions whose exact score may reach the ``k`` best, given screened scores within
    ``bound`` of exact: those at or above the ``k``-th best screened score less ``2 * bound``
    (every page below that is beaten, exactly, by ``k`` pages). Pages at ``-inf`` are out."""
    finite = np.flatnonzero(np.isfinite(screened))
    if finite.size <= k:
        return finite
    kth = float(np.partition(screened[finite], finite.size - k)[finite.size - k])
    return finite[screened[finite] >= kth - 2 * bound]
