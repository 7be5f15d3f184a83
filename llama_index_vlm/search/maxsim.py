"""Exact late-interaction (MaxSim) scoring of queries against pages, and top-k selection.

The score of a query against a page is ColPali's: for each query vector, the largest dot product
with any of the page's vectors, summed over the query vectors. It is the same quantity as
transformers' ``ColPaliProcessor.score_retrieval`` and colpali-engine's ``score_multi_vector``,
computed without padding: all pages' vectors live in one contiguous matrix
(:class:`PageVectorMatrix`), scored block by block with one matrix product per block, so memory
stays bounded however many pages there are.

Example:
    >>> import numpy as np
    >>> pages = PageVectorMatrix.from_pages([np.eye(4)[:2], np.eye(4)[2:]])
    >>> maxsim_scores(np.eye(4)[:1], pages)
    array([[1., 0.]], dtype=float32)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import torch

from llama_index_vlm.errors import EmptyInputError

ArrayLike = np.ndarray | torch.Tensor

#: Default number of page vectors scored per matrix product (12 ColPali pages). With 128-dim
#: vectors and a 20-token query this is 6 MiB of float32 page vectors plus 1 MiB of
#: similarities per block: small enough to stay in the CPU's last-level cache, large enough
#: that the product runs at full speed.
DEFAULT_BLOCK_SIZE = 12_288
_SIMILARITY_BLOCK_ELEMENTS = 1 << 22  # 16 MiB of float32 similarities per block at most

#: With ``block_size=None``, a call makes about this many blocks (but none smaller
#: than ``DEFAULT_BLOCK_SIZE`` or larger than ``_MAX_AUTO_BLOCK`` rows). Every block is a few
#: parallel regions of torch's threads; when the CPU is shared, each region waits for its
#: slowest thread, so thousands of small blocks cost far more than their arithmetic (issue
#: 15: at load 20-30, 12,288-row blocks ran 4.8-6x slower than 196,608-row ones).
_BLOCKS_PER_CALL = 8
_MAX_AUTO_BLOCK = 131_072  # 127 ColPali pages: 64 MiB of float32 rows per block
#: float16 pages of a list at least this long on average are widened one by one, not gathered.
_DIRECT_WIDEN_ROWS = 256


def as_float32_matrix(vectors: ArrayLike, name: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous 2-D float32 numpy array (torch tensors accepted).

    bfloat16 and float16 tensors are widened; a 1-D vector becomes one row.
    """
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    matrix = np.asarray(vectors)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_vectors, dim) array, got shape {matrix.shape}")
    return np.ascontiguousarray(matrix, dtype=np.float32)


# torch warns (once per process) that writing to a tensor over a read-only array is undefined.
# This package's tensors over memory-mapped index files and Arrow buffers are only read, so the
# warning is ignored where this package raises it. One filter, added once: a catch_warnings
# around each view swapped the process's filter list, and searches in several threads at once
# left their "ignore" behind in it, or dropped a filter another thread added meanwhile.
warnings.filterwarnings(
    "ignore",
    message="The given NumPy array is not writable",
    category=UserWarning,
    module=r"llama_index_vlm\.",
)


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A torch tensor sharing ``array``'s memory, also for read-only arrays (e.g. memmaps).

    torch warns that writing to a tensor over a read-only array is undefined; the search
    code only reads, so the warning is ignored (for this package's calls) rather than paying
    for a copy.
    """
    return torch.from_numpy(array)


def _as_storage_matrix(vectors: ArrayLike, name: str) -> np.ndarray:
    """Like :func:`as_float32_matrix`, but keeps float16 as float16 (half the memory)."""
    if isinstance(vectors, torch.Tensor):
        dtype = torch.float16 if vectors.dtype == torch.float16 else torch.float32
        vectors = vectors.detach().to("cpu", dtype).numpy()
    matrix = np.asarray(vectors)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_vectors, dim) array, got shape {matrix.shape}")
    dtype = np.float16 if matrix.dtype == np.float16 else np.float32
    return np.ascontiguousarray(matrix, dtype=dtype)


@dataclass(frozen=True)
class PageVectorMatrix:
    """Many pages' multi-vectors packed into one contiguous matrix plus offsets.

    Page ``i`` owns rows ``vectors[offsets[i]:offsets[i + 1]]``. Packing once and scoring many
    times avoids re-padding or re-concatenating the corpus on every query. ``vectors`` may be
    float16 (half the memory; widened to float32 block by block while scoring) or float32.

    Attributes:
        vectors: ``(n_vectors, dim)`` float16 or float32 matrix of all pages' vectors.
        offsets: ``(n_pages + 1,)`` int64 row offsets, ``offsets[0] == 0``,
            ``offsets[-1] == n_vectors``; every page has at least one vector.

    Example:
        >>> import numpy as np
        >>> pages = PageVectorMatrix.from_pages([np.ones((3, 8)), np.ones((5, 8))])
        >>> pages.n_pages, pages.lengths.tolist(), pages.vectors.dtype
        (2, [3, 5], dtype('float32'))
    """

    vectors: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets, dtype=np.int64)
        object.__setattr__(self, "offsets", offsets)
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {self.vectors.shape}")
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0:
            raise ValueError("offsets must be 1-D and start at 0")
        if offsets[-1] != self.vectors.shape[0]:
            raise ValueError(
                f"offsets end at {offsets[-1]} but there are {self.vectors.shape[0]} vectors"
            )
        if np.any(np.diff(offsets) <= 0):
            raise ValueError("every page needs at least one vector (offsets must increase)")

    @classmethod
    def from_pages(
        cls, page_vectors: Sequence[ArrayLike], dtype: str | np.dtype | None = None
    ) -> PageVectorMatrix:
        """Pack a sequence of ``(n_patches_i, dim)`` arrays or tensors.

        Args:
            page_vectors: one matrix per page; lengths may differ, dims may not.
            dtype: storage dtype, ``"float16"`` or ``"float32"``; by default float16 if every
                page is float16, else float32.
        """
        matrices = [
            _as_storage_matrix(page, f"page_vectors[{i}]") for i, page in enumerate(page_vectors)
        ]
        if not matrices:
            raise ValueError("page_vectors is empty; pack at least one page")
        dims = {matrix.shape[1] for matrix in matrices}
        if len(dims) != 1:
            raise ValueError(f"all pages must have the same vector dim, got {sorted(dims)}")
        if dtype is None:
            all_half = all(matrix.dtype == np.float16 for matrix in matrices)
            dtype = np.float16 if all_half else np.float32
        dtype = np.dtype(dtype)
        if dtype not in (np.float16, np.float32):
            raise ValueError(f"dtype must be float16 or float32, got {dtype}")
        lengths = np.array([matrix.shape[0] for matrix in matrices], dtype=np.int64)
        offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        vectors = np.concatenate(matrices, axis=0).astype(dtype, copy=False)
        return cls(vectors=vectors, offsets=offsets)

    @classmethod
    def from_array(cls, page_vectors: np.ndarray) -> PageVectorMatrix:
        """Wrap a ``(n_pages, n_patches, dim)`` array of equal-length pages without copying."""
        if page_vectors.ndim != 3:
            raise ValueError(f"expected (n_pages, n_patches, dim), got {page_vectors.shape}")
        n_pages, n_patches, dim = page_vectors.shape
        vectors = _as_storage_matrix(page_vectors.reshape(n_pages * n_patches, dim), "vectors")
        return cls(vectors=vectors, offsets=np.arange(n_pages + 1, dtype=np.int64) * n_patches)

    @property
    def n_pages(self) -> int:
        """Number of pages."""
        return self.offsets.size - 1

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self.vectors.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        """``(n_pages,)`` number of vectors of each page."""
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes held by the vectors and offsets."""
        return self.vectors.nbytes + self.offsets.nbytes

    def __len__(self) -> int:
        return self.n_pages

    def page(self, index: int) -> np.ndarray:
        """The ``(n_patches, dim)`` vectors of page ``index`` (a view, no copy)."""
        return self.vectors[self.offsets[index] : self.offsets[index + 1]]

    def select(self, page_indices: Sequence[int] | np.ndarray) -> PageVectorMatrix:
        """A new matrix holding only ``page_indices``, in that order (copies those rows)."""
        page_indices = np.asarray(page_indices, dtype=np.int64)
        return PageVectorMatrix.from_pages([self.page(int(i)) for i in page_indices])


def _pack_queries(query_vectors: ArrayLike | Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    """Stack one or many queries into a float32 token matrix plus per-query token offsets."""
    if isinstance(query_vectors, (np.ndarray, torch.Tensor)):
        if query_vectors.ndim == 3:
            queries = [query_vectors[i] for i in range(query_vectors.shape[0])]
        else:
            queries = [query_vectors]
    else:
        queries = list(query_vectors)
    if not queries:
        raise ValueError("query_vectors is empty; pass at least one query")
    matrices = [as_float32_matrix(query, f"query_vectors[{i}]") for i, query in enumerate(queries)]
    if any(matrix.shape[0] == 0 for matrix in matrices):
        raise EmptyInputError("a query has no vectors; encode a non-empty query")
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([matrix.shape[0] for matrix in matrices], out=offsets[1:])
    return np.concatenate(matrices, axis=0), offsets


class _PageBlocks:
    """Reads pages block by block as float32 tensors, from a packed matrix or a list of pages.

    A list is never packed first: each block's pages are gathered with one ``np.concatenate``
    into a reused buffer (a plain memory copy) and widened from float16 with one torch copy, so
    scoring pages fetched from a store costs no extra pass over them.
    """

    def __init__(self, page_vectors: PageVectorMatrix | Sequence[ArrayLike] | np.ndarray):
        if isinstance(page_vectors, np.ndarray) and page_vectors.ndim == 3:
            page_vectors = PageVectorMatrix.from_array(page_vectors)
        if isinstance(page_vectors, PageVectorMatrix):
            self._all_rows: np.ndarray | None = page_vectors.vectors
            self._pages: list[np.ndarray] = []
            self._row_offsets: list[int] = []  # only a list's pages are sliced one by one
            self.offsets = page_vectors.offsets
        else:
            self._all_rows = None
            self._pages = [_as_page_matrix(page, i) for i, page in enumerate(page_vectors)]
            if not self._pages:
                raise ValueError("page_vectors is empty; pass at least one page")
            dims = {page.shape[1] for page in self._pages}
            if len(dims) != 1:
                raise ValueError(f"all pages must have the same vector dim, got {sorted(dims)}")
            if len({page.dtype for page in self._pages}) > 1:
                self._pages = [page.astype(np.float32) for page in self._pages]
            # Plain ints for widening page by page, and the same offsets as an array.
            self._row_offsets = list(accumulate((page.shape[0] for page in self._pages), initial=0))
            self.offsets = np.array(self._row_offsets, dtype=np.int64)
        sample = self._all_rows if self._all_rows is not None else self._pages[0]
        self.dim = sample.shape[1]
        self.dtype = sample.dtype
        self.lengths = np.diff(self.offsets)
        self._buffer = torch.empty(0)  # float32 rows of the current block
        self._gathered = np.empty((0, self.dim), dtype=self.dtype)  # list input, before widening

    def block(self, first: int, last: int) -> torch.Tensor:
        """Pages ``[first, last)`` as one ``(n_rows, dim)`` float32 tensor, valid until the
        next call."""
        row_start, row_stop = int(self.offsets[first]), int(self.offsets[last])
        n_rows = row_stop - row_start
        widen = self.dtype != np.float32
        if widen and self._buffer.shape[0] < n_rows:
            self._buffer = torch.empty((n_rows, self.dim), dtype=torch.float32)
        if self._all_rows is not None:
            rows = self._all_rows[row_start:row_stop]
        elif last - first == 1:
            rows = self._pages[first]
        elif widen and n_rows >= _DIRECT_WIDEN_ROWS * (last - first):
            # Large float16 pages (a rerank's, read from memory-mapped files): widen each
            # straight into the block, one pass over them instead of a gather and a widening
            # (32 ColPali pages: 5.0 ms instead of 5.6, benchmarks/RESULTS.md).
            return self._widened_pages(first, last)
        else:
            if self._gathered.shape[0] < n_rows:
                self._gathered = np.empty((n_rows, self.dim), dtype=self.dtype)
            rows = np.concatenate(self._pages[first:last], out=self._gathered[:n_rows])
        if not widen:
            return tensor_view(rows)
        # torch widens float16 with SIMD into a buffer that stays in cache; numpy's astype is
        # scalar and ~20x slower.
        return self._buffer[:n_rows].copy_(tensor_view(rows))

    def _widened_pages(self, first: int, last: int) -> torch.Tensor:
        """Pages ``[first, last)`` of a list, each widened into the float32 block buffer."""
        offsets, base, buffer = self._row_offsets, self._row_offsets[first], self._buffer
        for index in range(first, last):  # memory-mapped pages: read, never written
            rows = buffer[offsets[index] - base : offsets[index + 1] - base]
            rows.copy_(torch.from_numpy(self._pages[index]))
        return buffer[: offsets[last] - base]


def _as_page_matrix(page: ArrayLike, index: int) -> np.ndarray:
    matrix = _as_storage_matrix(page, f"page_vectors[{index}]")
    if matrix.shape[0] == 0:
        raise ValueError(f"page_vectors[{index}] has no vectors; every page needs at least one")
    return matrix


def maxsim_scores(
    query_vectors: ArrayLike | Sequence[ArrayLike],
    page_vectors: PageVectorMatrix | Sequence[ArrayLike],
    *,
    block_size: int | None = None,
) -> np.ndarray:
    """Exact MaxSim scores of every query against every page, in float32.

    ``score[q, p] = sum_i max_j <query_q[i], page_p[j]>``, as in ColPali. Pages are scored in
    blocks of about ``block_size`` vectors (whole pages, at least one per block) with one
    float32 matrix product per block for all queries together, so the extra memory is about
    ``block_size * (dim + n_query_tokens) * 4`` bytes. float16 page vectors are widened to
    float32 block by block; products and sums are float32.

    Args:
        query_vectors: one query ``(n_q, dim)``, a batch ``(n_queries, n_q, dim)``, or a
            sequence of ``(n_q_i, dim)`` queries of different lengths (arrays or tensors).
        page_vectors: a :class:`PageVectorMatrix` (pack once, score many times), a sequence of
            ``(n_p_j, dim)`` pages (arrays or tensors, float16 or float32; e.g. as fetched
            from a store, scored without packing them first), or a ``(n_pages, n_p, dim)``
            array.
        block_size: page vectors per matrix product; bounds memory, does not change results.
            Default: the pages' vectors in about 8 blocks, each between 12,288 and 131,072
            vectors (at most ~75 MiB), so few parallel regions wait on a busy CPU.

    Returns:
        ``(n_queries, n_pages)`` float32 scores (one row for a single 2-D query).

    Example:
        >>> import numpy as np
        >>> query = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> pages = [np.array([[1.0, 0.0]]), np.array([[0.6, 0.8], [0.8, 0.6]])]
        >>> maxsim_scores(query, pages).round(2)
        array([[1. , 1.6]], dtype=float32)
    """
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tokens, query_offsets = _pack_queries(query_vectors)
    pages = _PageBlocks(page_vectors)
    if block_size is None:
        per_call = -(-int(pages.offsets[-1]) // _BLOCKS_PER_CALL)
        block_size = min(max(per_call, DEFAULT_BLOCK_SIZE), _MAX_AUTO_BLOCK)
    if tokens.shape[1] != pages.dim:
        raise ValueError(
            f"query vectors have dim {tokens.shape[1]} but page vectors have dim {pages.dim}"
        )
    n_queries, n_tokens = query_offsets.size - 1, tokens.shape[0]
    scores = np.empty((n_queries, pages.lengths.size), dtype=np.float32)
    tokens_t = torch.from_numpy(tokens)
    # Many query tokens make the (n_tokens, n_rows) similarity block the larger buffer; cap it
    # too, so a batch of queries does not spill the block out of cache.
    rows_per_block = max(1, min(block_size, _SIMILARITY_BLOCK_ELEMENTS // n_tokens))
    similarity_buffer = torch.empty(0)
    for first, last in page_blocks(pages.offsets, rows_per_block):
        block = pages.block(first, last)
        n_rows = block.shape[0]
        # (n_tokens, n_rows): each token's similarities to a page are contiguous, so the
        # per-page max is a contiguous reduction (much faster than reducing the other layout).
        if similarity_buffer.numel() < n_tokens * n_rows:
            similarity_buffer = torch.empty(n_tokens * n_rows)
        similarities = similarity_buffer[: n_tokens * n_rows].view(n_tokens, n_rows)
        torch.mm(tokens_t, block.T, out=similarities)
        lengths = pages.lengths[first:last]
        if lengths.min() == lengths.max():
            # Equal-length pages (every ColPali page of one image size): a reshape, no gather.
            view = similarities.view(n_tokens, last - first, int(lengths[0]))
            best = view.amax(2).numpy()
        else:
            starts = pages.offsets[first:last] - pages.offsets[first]
            best = np.maximum.reduceat(similarities.numpy(), starts, axis=1)
        # best: (n_tokens, n_pages_in_block); sum each query's tokens.
        if n_queries == 1:
            scores[0, first:last] = best.sum(axis=0)
        else:
            scores[:, first:last] = np.add.reduceat(best, query_offsets[:-1], axis=0)
    return scores


def page_blocks(
    offsets: np.ndarray, block_size: int, first_page: int = 0, last_page: int | None = None
) -> list[tuple[int, int]]:
    """Split pages ``[first_page, last_page)`` into ``[first, last)`` runs of whole pages.

    Each run holds at most ``block_size`` vectors, or a single page if that page alone is
    longer. ``offsets`` are the pages' row offsets, as in :class:`PageVectorMatrix`.
    """
    last_page = offsets.size - 1 if last_page is None else last_page
    blocks = []
    first = first_page
    while first < last_page:
        # The last page whose end stays within the budget; always take at least one page.
        last = int(np.searchsorted(offsets, offsets[first] + block_size, side="right")) - 1
        last = min(max(last, first + 1), last_page)
        blocks.append((first, last))
        first = last
    return blocks


def top_k(scores: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best pages per query, best first; ties go to the lower page index.

    Args:
        scores: ``(n_pages,)`` or ``(n_queries, n_pages)`` scores, higher is better.
        k: how many to keep; more than ``n_pages`` keeps them all.

    Returns:
        ``(indices, values)``, each ``(k,)`` or ``(n_queries, k)``.

    Example:
        >>> top_k(np.array([0.1, 0.9, 0.5]), 2)
        (array([1, 2]), array([0.9, 0.5]))
    """
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    single = scores.ndim == 1
    matrix = scores[None, :] if single else scores
    n_pages = matrix.shape[1]
    k = min(k, n_pages)
    if k == 0:
        empty = np.zeros((matrix.shape[0], 0), dtype=np.int64)
        indices, values = empty, np.zeros((matrix.shape[0], 0), dtype=scores.dtype)
    else:
        if k < n_pages:
            # argpartition narrows to the k best in O(n_pages); a tie at the cut is resolved
            # by taking every page that scores at least the k-th best, then sorting.
            kth = np.partition(matrix, n_pages - k, axis=1)[:, n_pages - k]
            rows = [np.flatnonzero(row >= cut) for row, cut in zip(matrix, kth, strict=True)]
        else:
            rows = [np.arange(n_pages)] * matrix.shape[0]
        indices = np.empty((matrix.shape[0], k), dtype=np.int64)
        for q, candidates in enumerate(rows):
            # lexsort sorts by the last key first: descending score, then ascending index.
            order = np.lexsort((candidates, -matrix[q, candidates]))
            indices[q] = candidates[order[:k]]
        values = np.take_along_axis(matrix, indices, axis=1)
    if single:
        return indices[0], values[0]
    return indices, values
