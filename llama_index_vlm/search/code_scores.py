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
    # Scaling every token to norm <= 1 keeps float16 products far from overflow; the scores
    # are scaled back, so they stay comparable with exact MaxSim.
    scale = float(np.linalg.norm(query, axis=1).max()) or 1.0
    query_t = torch.from_numpy(query / scale).half()
    codes_t = tensor_view(codes)
    scores = np.empty(slots.size, dtype=np.float32)
    blocks = page_blocks(selected_offsets, _BLOCK_ROWS)
    # One buffer of each kind for all blocks: a fresh one per block is fresh memory, which the
    # kernel zero-fills page by page (that took half the gathering time at 2,048 pages).
    most_rows = max(int(selected_offsets[last] - selected_offsets[first]) for first, last in blocks)
    gathered_buffer = torch.empty((most_rows, codes.shape[1]), dtype=torch.float16)
    similarity_buffer = torch.empty(query_t.shape[0] * most_rows, dtype=torch.float16)
    for first, last in blocks:
        block_lengths = lengths[first:last]
        rows = np.repeat(offsets[slots[first:last]], block_lengths) + ranges(block_lengths)
        gathered = gathered_buffer[: rows.size]
        torch.index_select(codes_t, 0, torch.from_numpy(rows), out=gathered)
        similarities = similarity_buffer[: query_t.shape[0] * rows.size].view(-1, rows.size)
        torch.mm(query_t, gathered.T, out=similarities)
        if block_lengths.min() == block_lengths.max():
            best = similarities.view(query_t.shape[0], last - first, int(block_lengths[0])).amax(2)
            best = best.float().numpy()
        else:
            starts = selected_offsets[first:last] - selected_offsets[first]
            best = np.maximum.reduceat(similarities.float().numpy(), starts, axis=1)
        scores[first:last] = best.sum(axis=0)
    return scores * np.float32(scale)
