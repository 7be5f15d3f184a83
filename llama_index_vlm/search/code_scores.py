"""Approximate MaxSim of a query against chosen pages' 16-bit codes, multiplied as stored.

The fast index's second stage scores a few hundred pages' pooled codes per query. Widening
those codes to float32 first (one copy into a new buffer, then a float32 product) cost more
than the product itself: at 10k pages, 11.3 ms of a 14.6 ms stage (benchmarks/RESULTS.md).
So the codes are gathered with one ``index_select`` and multiplied in their 16-bit type:

- float16 where the CPU multiplies float16 natively (oneDNN on AVX512-FP16 or AMX);
- bfloat16 where it does not but multiplies bfloat16 natively (AVX512-BF16, as on Cooper
  Lake and later Xeons or Zen 4): there a float16 product is slower than a float32 one, and a
  bfloat16 one 2-4x faster (:func:`preferred_code_dtype`; the index then stores its codes as
  bfloat16);
- otherwise float16 codes widened to float32.

The first call times each 16-bit product against the widened float32 one on a small problem
(:func:`half_products_are_fast`, :func:`bfloat16_products_are_fast`) and keeps the answer.

The scores only pick candidates for the exact rerank, which reads the full vectors: 16-bit
products (accumulated in float32 by oneDNN, rounded to the 16-bit type) move a pooled score by
about 1e-3 (float16) or 4e-3 (bfloat16) of its value, inside what the rerank's depth rule
allows for (it widens the rerank by the spread of the residuals it sees).

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
from typing import Literal

import numpy as np
import torch

from llama_index_vlm.search._growable import ranges
from llama_index_vlm.search.maxsim import PageVectorMatrix, maxsim_scores, page_blocks, tensor_view

#: Code rows gathered and multiplied at a time (16 MiB of 16-bit codes at 128 dims): few
#: blocks, so few parallel regions for torch's thread team to wake.
_BLOCK_ROWS = 65_536
#: ... and on one thread (2 MiB), where there is no team to wake and a block that stays in the
#: core's cache from its gathering to its product and maxima wins: at 10k pages a search on
#: one thread ran 45-46 instead of 38-41 a second alone, two processes searching at once 98-100
#: instead of 75-79 (``benchmarks/RESULTS.md``, issue 15).
_ONE_THREAD_BLOCK_ROWS = 8192

#: Rows whose float32 similarities set the baselines of centred bfloat16 products.
_BASELINE_ROWS = 2048

#: Unit roundoff of float16 (half its machine epsilon).
_HALF_EPSILON = 2.0**-11

#: How a fast index stores its pooled codes (see :func:`preferred_code_dtype`).
CodeDtype = Literal["float16", "bfloat16"]


@functools.cache
def half_products_are_fast() -> bool:
    """Whether this CPU multiplies float16 matrices at least as fast as it widens them to
    float32 and multiplies those, and accumulates their products in float32 (timed and
    checked once per process, best of five, about a millisecond).

    A kernel that accumulated in float16 would move pooled scores by ~sqrt(dim) roundings
    per similarity, and the exact rerank would have to go deeper to make up for it.
    """
    return _products_are_fast(torch.float16)


@functools.cache
def bfloat16_products_are_fast() -> bool:
    """:func:`half_products_are_fast` for bfloat16 (timed and checked once per process)."""
    return _products_are_fast(torch.bfloat16)


@functools.cache
def preferred_code_dtype() -> CodeDtype:
    """The type a new fast index stores its codes in on this CPU: ``"bfloat16"`` where
    bfloat16 products are fast and float16 ones are not (e.g. AVX512-BF16 without
    AVX512-FP16 or AMX), else ``"float16"``.

    At 10k pages on such a CPU (2 cores, 512 pages' codes a query), the code stage took 6.4 ms
    with bfloat16 codes against 10.5 ms widening float16 ones and 21.1 ms multiplying them as
    float16, and a fast-mode ``retrieve`` 30.4 against 37.6 ms (``benchmarks/RESULTS.md``).
    """
    if not half_products_are_fast() and bfloat16_products_are_fast():
        return "bfloat16"
    return "float16"


def _products_are_fast(dtype: torch.dtype) -> bool:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(32, 128, generator=generator)
    rows = torch.randn(8192, 128, generator=generator).to(dtype)
    narrow_query = query.to(dtype)

    def best_time(product) -> float:
        product()  # warm-up: oneDNN builds its kernel on the first call
        times = []
        for _ in range(5):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return min(times)

    narrow = best_time(lambda: torch.mm(narrow_query, rows.T))
    widened = best_time(lambda: torch.mm(query, rows.float().T))
    return narrow <= widened and products_accumulate_in_float32(query, rows)


def products_accumulate_in_float32(query: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether ``torch.mm`` of ``query`` rounded to the 16-bit type of ``rows`` (float16 or
    bfloat16) and ``rows.T`` is as close to the float32 product as rounding the inputs and the
    result allows (float32 accumulation)."""
    # On random products a kernel accumulating in float32 is off by at most 0.25 of `bound`
    # (the query's and the result's roundings); one accumulating in float16, by 2.7.
    unit_roundoff = torch.finfo(rows.dtype).eps / 2
    product = torch.mm(query.to(rows.dtype), rows.T).float()
    error = (product - torch.mm(query, rows.float().T)).abs().max()
    bound = unit_roundoff * query.norm(dim=1).max() * rows.float().norm(dim=1).max()
    return bool(error <= bound)


def code_matrix(codes: np.ndarray, dtype: CodeDtype) -> np.ndarray:
    """``(n, dim)`` ``codes`` (float16 or float32) as a fast index stores them: float16, or
    the bfloat16 bit patterns in a ``uint16`` array (numpy has no bfloat16; see
    :func:`code_tensor`), rounded to nearest, a block of rows at a time (no float32 copy of
    them all)."""
    if dtype == "float16":
        return codes if codes.dtype == np.float16 else codes.astype(np.float16)
    if dtype != "bfloat16":
        raise ValueError(f"code dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    stored = np.empty(codes.shape, dtype=np.uint16)
    out = code_tensor(stored)
    for start in range(0, codes.shape[0], _BLOCK_ROWS):
        block = tensor_view(np.ascontiguousarray(codes[start : start + _BLOCK_ROWS]))
        # Through float32: torch widens float16 with SIMD, but narrows it to bfloat16 slowly.
        out[start : start + block.shape[0]] = block.float()
    return stored


def code_tensor(stored: np.ndarray) -> torch.Tensor:
    """A tensor view of codes from :func:`code_matrix` (bfloat16 for ``uint16`` bits)."""
    if stored.dtype == np.uint16:
        return torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16)
    return tensor_view(stored)


def float16_codes(stored: np.ndarray) -> np.ndarray:
    """Codes from :func:`code_matrix` as float16 (exact: bfloat16's 8 significant bits fit in
    float16's 11, in the range of unit vectors' components)."""
    if stored.dtype == np.float16:
        return stored
    return code_tensor(stored).to(torch.float16).numpy()


def code_maxsim_scores(
    query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, slots: np.ndarray
) -> np.ndarray:
    """MaxSim ``(len(slots),)`` float32 of ``query`` against pages ``slots``.

    Args:
        query: ``(n_tokens, dim)`` float32 query vectors.
        codes: ``(n_rows, dim)`` code rows of all pages: float16, or bfloat16 bits from
            :func:`code_matrix` (multiplied as bfloat16), or float32.
        offsets: page ``s`` owns rows ``codes[offsets[s]:offsets[s + 1]]``.
        slots: the pages to score, in the order of the result.
    """
    if slots.size == 0:
        return np.zeros(0, dtype=np.float32)
    lengths = offsets[slots + 1] - offsets[slots]
    selected_offsets = np.zeros(slots.size + 1, dtype=np.int64)  # the chosen pages' rows, packed
    np.cumsum(lengths, out=selected_offsets[1:])
    multiply_as_stored = codes.dtype == np.uint16 or (
        codes.dtype == np.float16 and half_products_are_fast()
    )
    if not multiply_as_stored:
        rows = np.repeat(offsets[slots], lengths) + ranges(lengths)
        selected = PageVectorMatrix(vectors=codes[rows], offsets=selected_offsets)
        return maxsim_scores(query, selected)[0]
    codes_t = code_tensor(codes)
    products = _HalfProducts(query, selected_offsets, codes_t, gathered=True)
    if products.centred:
        # The baselines come from the first pages' rows, whatever the blocks.
        head = int(np.searchsorted(selected_offsets, _BASELINE_ROWS)) + 1
        head_lengths = lengths[:head]
        rows = np.repeat(offsets[slots[:head]], head_lengths) + ranges(head_lengths)
        products.set_baseline(codes_t[torch.from_numpy(rows[:_BASELINE_ROWS])])
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
    vectors = tensor_view(pages.vectors)
    products = _HalfProducts(query, pages.offsets, vectors, gathered=False)
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
    """The query in the rows' 16-bit type and the reused buffers of one call's blocks of pages.

    One gather buffer and one similarity buffer serve all blocks: a fresh one per block is
    fresh memory, which the kernel zero-fills page by page (that took half the gathering time
    at 2,048 pages).

    bfloat16 products are *centred*: each token's similarities are computed less a baseline
    (the token's best float32 similarity among the first pages' rows), fused into the product
    by ``addmm`` before it is rounded to bfloat16, and the baselines are added back in float32.
    bfloat16 keeps 8 significant bits, so rounding a similarity of 0.5 moves it by up to 1e-3;
    a page's best similarities lie near the baseline, and rounding their small differences
    moves them far less. Without it, pages whose scores differ by less than that (23-vector
    pages of a tiny encoder, kept whole as codes) sent the exact rerank 465-469 pages deep on
    average (its limit is 512), against 32 with float16 products (``benchmarks/RESULTS.md``).
    """

    def __init__(
        self, query: np.ndarray, offsets: np.ndarray, rows: torch.Tensor, *, gathered: bool
    ):
        # Scaling every token to norm <= 1 keeps float16 products far from overflow; the
        # scores are scaled back, so they stay comparable with exact MaxSim.
        self.scale = float(np.linalg.norm(query, axis=1).max()) or 1.0
        self.query = torch.from_numpy(query / self.scale).to(rows.dtype)
        one_thread = torch.get_num_threads() == 1
        self.blocks = page_blocks(offsets, _ONE_THREAD_BLOCK_ROWS if one_thread else _BLOCK_ROWS)
        most_rows = max(int(offsets[last] - offsets[first]) for first, last in self.blocks)
        n_tokens = self.query.shape[0]
        gathered_shape = (most_rows if gathered else 0, rows.shape[1])
        self._gathered = torch.empty(gathered_shape, dtype=rows.dtype)
        self._similarities = torch.empty(n_tokens * most_rows, dtype=rows.dtype)
        self.centred = rows.dtype == torch.bfloat16
        self._minus_baseline: torch.Tensor | None = None  # (n_tokens, 1), in the rows' type
        self._baseline_sum = 0.0

    def set_baseline(self, rows: torch.Tensor) -> None:
        """Centre the products on each token's best similarity to ``rows`` (some of the
        rows to be scored); needed before :meth:`page_sums` when :attr:`centred`."""
        best = torch.mm(self.query.float(), rows.float().T).amax(1, keepdim=True)
        self._minus_baseline = (-best).to(self.query.dtype)
        # What the products have subtracted, exactly (bfloat16 values are exact in float32).
        self._baseline_sum = -float(self._minus_baseline.float().sum())

    def gather_buffer(self, n_rows: int) -> torch.Tensor:
        """The first ``n_rows`` rows of the gather buffer."""
        return self._gathered[:n_rows]

    def page_sums(self, rows: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
        """``(n_pages,)`` float32 MaxSim (before scaling back) of pages whose rows lie one
        after another in ``rows``."""
        n_tokens, n_rows = self.query.shape[0], rows.shape[0]
        similarities = self._similarities[: n_tokens * n_rows].view(n_tokens, n_rows)
        if self.centred:
            similarities.copy_(self._minus_baseline.expand(n_tokens, n_rows))
            similarities.addmm_(self.query, rows.T)
        else:
            torch.mm(self.query, rows.T, out=similarities)
        if lengths.min() == lengths.max():
            best = similarities.view(n_tokens, lengths.size, int(lengths[0])).amax(2)
            sums = best.float().numpy().sum(axis=0)
        else:
            starts = np.zeros(lengths.size, dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            sums = np.maximum.reduceat(similarities.float().numpy(), starts, axis=1).sum(axis=0)
        return sums + np.float32(self._baseline_sum) if self.centred else sums
