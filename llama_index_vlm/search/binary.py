"""Binary sign codes of vectors and MaxSim over them with Hamming similarity.

A 128-dim float vector becomes 128 sign bits (16 bytes, 32x smaller than float32). For unit
vectors the fraction of agreeing signs tracks the angle between them, so
``1 - 2 * hamming / dim`` is a cheap stand-in for the dot product: ``+1`` for identical signs,
``0`` for unrelated vectors. Summed over query tokens of the per-token best match, it gives a
Hamming MaxSim that ranks pages roughly like the exact one.

Codes are stored word-major, ``(n_words, n_vectors)`` uint64 with ``n_words = ceil(dim / 64)``,
so each XOR with a query word runs over one contiguous array.

Example:
    >>> import numpy as np
    >>> codes = binary_codes(np.array([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]]))
    >>> codes.shape, codes.dtype
    ((1, 2), dtype('uint64'))
    >>> hamming_similarity(codes, codes, dim=3).round(2)
    array([[ 1.  , -0.33],
           [-0.33,  1.  ]], dtype=float32)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llama_index_vlm.search.maxsim import ArrayLike, as_float32_matrix, page_blocks

_BYTE_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _popcount(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Set bits of each uint64 (``np.bitwise_count`` on numpy >= 2, a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words, out=out)
    counts = _BYTE_POPCOUNT[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


#: Page codes scored per pass. 65,536 codes x 2 words is 1 MiB, small enough for the XOR and
#: popcount temporaries to stay in cache.
DEFAULT_CODE_BLOCK = 65_536


def binary_codes(vectors: ArrayLike) -> np.ndarray:
    """Sign codes ``(n_words, n_vectors)`` uint64 of ``(n_vectors, dim)`` vectors.

    Bit ``i`` is set where component ``i`` is positive; unused bits of the last word are zero
    for every vector, so they never count as disagreements.
    """
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float16 and vectors.ndim == 2:
        matrix = vectors  # only the signs matter: no need to widen
    else:
        matrix = as_float32_matrix(vectors)
    n_vectors, dim = matrix.shape
    n_words = -(-dim // 64)
    bits = np.zeros((n_vectors, n_words * 64), dtype=bool)
    bits[:, :dim] = matrix > 0
    # packbits is big-endian within each byte; the bit order is irrelevant as long as queries
    # and pages use the same one, which they do since both come through here.
    packed = np.packbits(bits, axis=1).view(np.uint64)  # (n_vectors, n_words)
    return np.ascontiguousarray(packed.T)


def hamming_similarity(query_codes: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    """``(n_query, n_codes)`` float32 matrix of ``1 - 2 * hamming / dim`` between code sets."""
    distances = np.zeros((query_codes.shape[1], codes.shape[1]), dtype=np.int32)
    for word in range(codes.shape[0]):
        distances += _popcount(query_codes[word][:, None] ^ codes[word][None, :])
    return (1.0 - 2.0 * distances / dim).astype(np.float32)


def hamming_maxsim_scores(
    query_codes: np.ndarray,
    page_codes: np.ndarray | Sequence[np.ndarray],
    page_offsets: np.ndarray,
    dim: int,
    *,
    block_size: int = DEFAULT_CODE_BLOCK,
    n_threads: int | None = None,
) -> np.ndarray:
    """Approximate MaxSim of one query against every page, from sign codes.

    ``score[p] = sum_i max_j (1 - 2 * hamming(query_i, page_p_j) / dim)``.

    Args:
        query_codes: ``(n_words, n_query_tokens)`` codes of the query (:func:`binary_codes`).
        page_codes: ``(n_words, n_codes)`` codes of all pages, page after page (or a
            sequence of ``n_words`` contiguous ``(n_codes,)`` arrays).
        page_offsets: ``(n_pages + 1,)`` int64 offsets of each page's codes, strictly
            increasing from 0 to ``n_codes``.
        dim: the vectors' dimension (number of meaningful bits).
        block_size: codes scored per pass; bounds temporary memory, does not change results.
        n_threads: threads to split the pages over (numpy releases the GIL in its loops);
            default: the CPU count, at most 8.

    Returns:
        ``(n_pages,)`` float32 approximate scores.
    """
    n_words, n_tokens = query_codes.shape
    if len(page_codes) != n_words:
        raise ValueError(f"query codes have {n_words} words, page codes {len(page_codes)}")
    page_offsets = np.asarray(page_offsets, dtype=np.int64)
    n_pages = page_offsets.size - 1
    # Smallest distance per (token, page); the score transform is monotone, so apply it last.
    best = np.empty((n_tokens, n_pages), dtype=np.uint16)
    n_threads = n_threads or min(os.cpu_count() or 1, 8)
    n_codes = int(page_offsets[-1])
    # Threads only pay off when each gets a few blocks' worth of work.
    n_parts = max(1, min(n_threads, n_codes // block_size))
    bounds = np.searchsorted(page_offsets, np.linspace(0, n_codes, n_parts + 1)[1:-1])
    parts = list(zip([0, *bounds.tolist()], [*bounds.tolist(), n_pages], strict=True))
    parts = [(first, last) for first, last in parts if last > first]
    if len(parts) == 1:
        _best_distances(query_codes, page_codes, page_offsets, *parts[0], block_size, best)
    else:
        executor = _executor(n_threads)
        futures = [
            executor.submit(
                _best_distances,
                query_codes,
                page_codes,
                page_offsets,
                first,
                last,
                block_size,
                best,
            )
            for first, last in parts
        ]
        for future in futures:
            future.result()
    similarity = 1.0 - 2.0 * best.astype(np.float32) / dim
    return similarity.sum(axis=0, dtype=np.float32)


def _best_distances(
    query_codes: np.ndarray,
    page_codes: np.ndarray | Sequence[np.ndarray],
    page_offsets: np.ndarray,
    first_page: int,
    last_page: int,
    block_size: int,
    best: np.ndarray,
) -> None:
    """Fill ``best[:, first_page:last_page]`` with each token's smallest Hamming distance."""
    n_words, n_tokens = query_codes.shape
    n_rows_max = max(
        block_size, int(np.diff(page_offsets[first_page : last_page + 1]).max(initial=0))
    )
    xor = np.empty(n_rows_max, dtype=np.uint64)
    counts = np.empty(n_rows_max, dtype=np.uint8)
    distances = np.empty((n_tokens, n_rows_max), dtype=np.uint16)
    for first, last in page_blocks(page_offsets, block_size, first_page, last_page):
        row_start, row_stop = int(page_offsets[first]), int(page_offsets[last])
        n_rows = row_stop - row_start
        block_distances = distances[:, :n_rows]
        for token in range(n_tokens):
            row = block_distances[token]
            for word in range(n_words):
                np.bitwise_xor(
                    page_codes[word][row_start:row_stop], query_codes[word, token], out=xor[:n_rows]
                )
                _popcount(xor[:n_rows], out=counts[:n_rows])
                if word == 0:
                    np.copyto(row, counts[:n_rows])
                else:
                    row += counts[:n_rows]
        starts = page_offsets[first:last] - row_start
        best[:, first:last] = np.minimum.reduceat(block_distances, starts, axis=1)


_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def _executor(n_threads: int) -> ThreadPoolExecutor:
    """A process-wide pool per thread count, created on first use (threads are reused)."""
    if n_threads not in _EXECUTORS:
        _EXECUTORS[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="hamming")
    return _EXECUTORS[n_threads]
