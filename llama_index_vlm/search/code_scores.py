"""Approximate MaxSim of a query against chosen pages' float16 codes, multiplied as float16.

The fast index's second stage scores a few hundred pages' pooled codes per query. Widening
those codes to float32 first (one copy into a new buffer, then a float32 product) cost more
than the product itself: at 10k pages, 11.3 ms of a 14.6 ms stage (benchmarks/RESULTS.md).
Where the CPU multiplies float16 natively (oneDNN on AVX512-FP16 or AMX), this module gathers
the codes with one ``index_select`` and multiplies them as they are stored. Where it does not,
a float16 product can be many times slower than a float32 one, so the first call times both
on a small problem (:func:`half_products_are_fast`) and keeps the faster.

The scores only pick candidates for the exact rerank, which reads the full vectors: float16
products (accumulated in float32 by oneDNN, rounded to float16) move a pooled score by about
1e-3 of its value, well inside what the rerank's depth rule allows for.

Example:
    >>> import numpy as np
    >>> codes = np.eye(4, dtype=np.float16)           # 4 pages of one code each, rows 0-3
    >>> offsets = np.arange(5)
    >>> code_maxsim_scores(np.eye(4, dtype=np.float32)[[2]], codes, offsets, np.array([1, 2]))
    array([0., 1.], dtype=float32)
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from llama_index_vlm.search._growable import ranges
from llama_index_vlm.search.maxsim import PageVectorMatrix, maxsim_scores, page_blocks, tensor_view

#: Code rows gathered and multiplied at a time (16 MiB of float16 codes at 128 dims).
_BLOCK_ROWS = 65_536

#: Unit roundoff of float16 (half its machine epsilon).
_HALF_EPSILON = 2.0**-11


@functools.cache
def half_products_are_fast() -> bool:
    """Whether this CPU multiplies float16 matrices at least as fast as it widens them to
    float32 and multiplies those, and accumulates their products in float32 (timed and
    checked once per process, best of five, about a millisecond).

    A kernel that accumulated in float16 would move pooled scores by ~sqrt(dim) roundings
    per similarity, and the exact rerank would have to go deeper to make up for it.
    """
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(32, 128, generator=generator)
    rows = torch.randn(8192, 128, generator=generator).half()
    half_query = query.half()

    def best_time(product) -> float:
        product()  # warm-up: oneDNN builds its kernel on the first call
        times = []
        for _ in range(5):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return min(times)

    half = best_time(lambda: torch.mm(half_query, rows.T))
    widened = best_time(lambda: torch.mm(query, rows.float().T))
    return half <= widened and half_products_accumulate_in_float32(query, rows)


def half_products_accumulate_in_float32(query: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether ``torch.mm`` of float16 ``query`` and ``rows.T`` is as close to the float32
    product as rounding the inputs and the result allows (float32 accumulation)."""
    # On random products a kernel accumulating in float32 is off by at most 0.25 of `bound`
    # (the query's and the result's roundings); one accumulating in float16, by 2.7.
    error = (torch.mm(query.half(), rows.T).float() - torch.mm(query, rows.float().T)).abs().max()
    bound = _HALF_EPSILON * query.norm(dim=1).max() * rows.float().norm(dim=1).max()
    return bool(error <= bound)


def code_maxsim_scores(
    query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, slots: np.ndarray
) -> np.ndarray:
    """MaxSim ``(len(slots),)`` float32 of ``query`` against pages ``slots``.

    Args:
        query: ``(n_tokens, dim)`` float32 query vectors.
        codes: ``(n_rows, dim)`` float16 code rows of all pages.
        offsets: page ``s`` owns rows ``codes[offsets[s]:offsets[s + 1]]``.
        slots: the pages to score, in the order of the result.
    """
    if slots.size == 0:
        return np.zeros(0, dtype=np.float32)
    lengths = offsets[slots + 1] - offsets[slots]
    selected_offsets = np.zeros(slots.size + 1, dtype=np.int64)  # the chosen pages' rows, packed
    np.cumsum(lengths, out=selected_offsets[1:])
    if not half_products_are_fast() or codes.dtype != np.float16:
        rows = np.repeat(offsets[slots], lengths) + ranges(lengths)
        selected = PageVectorMatrix(vectors=codes[rows], offsets=selected_offsets)
        return maxsim_scores(query, selected)[0]
    products = _HalfProducts(query, selected_offsets, codes.shape[1], gathered=True)
    codes_t = tensor_view(codes)
    scores = np.empty(slots.size, dtype=np.float32)
    for first, last in products.blocks:
        block_lengths = lengths[first:last]
        rows = np.repeat(offsets[slots[first:last]], block_lengths) + ranges(block_lengths)
        gathered = products.gather_buffer(rows.size)
        torch.index_select(codes_t, 0, torch.from_numpy(rows), out=gathered)
        scores[first:last] = products.page_sums(gathered, block_lengths)
    return scores * np.float32(products.scale)


def half_maxsim_scores(query: np.ndarray, pages: PageVectorMatrix) -> np.ndarray:
    """MaxSim ``(n_pages,)`` float32 of ``query`` against every page of a float16 matrix,
    multiplied as float16 straight from the matrix (no copy, no widening).

    Only for a CPU where :func:`half_products_are_fast`. Each score is within
    :func:`half_maxsim_error_bound` of float32 MaxSim.
    """
    if pages.vectors.dtype != np.float16:
        raise TypeError(f"half_maxsim_scores needs float16 pages, got {pages.vectors.dtype}")
    products = _HalfProducts(query, pages.offsets, pages.vectors.shape[1], gathered=False)
    vectors = tensor_view(pages.vectors)
    scores = np.empty(pages.n_pages, dtype=np.float32)
    lengths = pages.lengths
    for first, last in products.blocks:
        rows = vectors[int(pages.offsets[first]) : int(pages.offsets[last])]
        scores[first:last] = products.page_sums(rows, lengths[first:last])
    return scores * np.float32(products.scale)


def half_maxsim_error_bound(query: np.ndarray, max_vector_norm: float) -> float:
    """How far :func:`half_maxsim_scores` (or :func:`code_maxsim_scores` with float16
    products) may be from float32 MaxSim, for pages whose vectors have norms at most
    ``max_vector_norm``.

    Per query token ``q`` and page vector ``d`` (float16, so exact), a float16 product
    accumulated in float32 is off by the query's rounding (``u |q| |d|``, ``u = 2**-11``), the
    result's (``u |q| |d|``) and both sums' (float32, ``128 * 2**-24 |q| |d|`` each): under
    ``2.1 u |q| |d|``. A page's best product per token moves by no more than its products do,
    so a score moves by at most ``2.1 u max|d| sum|q|``; the terms for float16's subnormal
    numbers and the float32 sum over tokens are added on top.
    """
    norms = np.linalg.norm(np.asarray(query, dtype=np.float64), axis=1)
    n_tokens, dim = query.shape
    scale = float(norms.max()) if norms.size else 0.0
    relative = (2.1 * _HALF_EPSILON + n_tokens * 2.0**-23) * float(norms.sum()) * max_vector_norm
    subnormal = n_tokens * scale * 2.0**-25 * (np.sqrt(dim) * max_vector_norm + 1)
    return relative + subnormal


class _HalfProducts:
    """The float16 query and the reused buffers of one call's blocks of pages.

    One gather buffer and one similarity buffer serve all blocks: a fresh one per block is
    fresh memory, which the kernel zero-fills page by page (that took half the gathering time
    at 2,048 pages).
    """

    def __init__(self, query: np.ndarray, offsets: np.ndarray, dim: int, *, gathered: bool):
        # Scaling every token to norm <= 1 keeps float16 products far from overflow; the
        # scores are scaled back, so they stay comparable with exact MaxSim.
        self.scale = float(np.linalg.norm(query, axis=1).max()) or 1.0
        self.query = torch.from_numpy(query / self.scale).half()
        self.blocks = page_blocks(offsets, _BLOCK_ROWS)
        most_rows = max(int(offsets[last] - offsets[first]) for first, last in self.blocks)
        n_tokens = self.query.shape[0]
        self._gathered = torch.empty((most_rows if gathered else 0, dim), dtype=torch.float16)
        self._similarities = torch.empty(n_tokens * most_rows, dtype=torch.float16)

    def gather_buffer(self, n_rows: int) -> torch.Tensor:
        """The first ``n_rows`` rows of the gather buffer."""
        return self._gathered[:n_rows]

    def page_sums(self, rows: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
        """``(n_pages,)`` float32 MaxSim (before scaling back) of pages whose rows lie one
        after another in ``rows``."""
        n_tokens, n_rows = self.query.shape[0], rows.shape[0]
        similarities = self._similarities[: n_tokens * n_rows].view(n_tokens, n_rows)
        torch.mm(self.query, rows.T, out=similarities)
        if lengths.min() == lengths.max():
            best = similarities.view(n_tokens, lengths.size, int(lengths[0])).amax(2)
            return best.float().numpy().sum(axis=0)
        starts = np.zeros(lengths.size, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return np.maximum.reduceat(similarities.float().numpy(), starts, axis=1).sum(axis=0)
