"""Fast multi-stage MaxSim search: compact in-memory page codes pick candidates, exact rerank.

Each page is summarised by *codes*: ``ceil(n_patches / pool_factor)`` k-means-pooled unit
vectors (``pool_factor=16`` turns 1030 ColPali patch vectors into 65), kept in memory as float16,
plus their binary sign codes (:mod:`llama_index_vlm.search.binary`, 16 bytes per vector).
A search runs:

1. *prefilter*: Hamming MaxSim of the query's sign codes against every page's sign codes (XOR
   and popcount, no float maths); keep the best ``prefilter_depth`` pages;
2. *candidates*: float MaxSim of the query against those pages' pooled codes; keep the best
   ``candidate_depth``;
3. *rerank*: fetch the candidates' full vectors through a caller-supplied function (the store
   reads them from disk) and rank them by exact MaxSim.

The scores returned are exact MaxSim scores; a page can only be missed if an approximate stage
ranks it below its depth. With ``binary_prefilter=False`` stage 2 runs over every page.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pages = {f"page-{i}": rng.standard_normal((64, 16)).astype(np.float32) for i in range(50)}
    >>> index = FastPageIndex(pool_factor=8)
    >>> index.add(list(pages), list(pages.values()))
    >>> query = pages["page-7"][:5] + 0.1 * rng.standard_normal((5, 16)).astype(np.float32)
    >>> page_ids, scores = index.search(query, k=3, rerank_fn=lambda ids: [pages[i] for i in ids])
    >>> page_ids[0]
    'page-7'
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Literal

import numpy as np

from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.search.binary import binary_codes, hamming_maxsim_scores
from llama_index_vlm.search.maxsim import (
    ArrayLike,
    PageVectorMatrix,
    as_float32_matrix,
    maxsim_scores,
    top_k,
)
from llama_index_vlm.search.pooling import kmeans_pool

#: Stores with at least this many pages use fast mode under ``search_mode="auto"``. Below it,
#: exact MaxSim over every page costs at most ~0.1-0.2 s per query on a 2-core CPU (about
#: 10,000 pages/s), needs no index to build or keep in memory, and the fast index would rerank
#: a large share of the pages anyway.
FAST_MODE_MIN_PAGES = 2_000

#: Default number of candidates reranked exactly with the pages' full vectors (~10 ms for
#: 100 ColPali pages on 2 cores, plus reading them).
DEFAULT_CANDIDATE_DEPTH = 100

#: Default number of pages the binary prefilter passes on to the pooled-code stage: at least
#: this many, and at least 1% of the pages searched (Hamming MaxSim is coarser, and a larger
#: corpus has more near-ties to let through).
DEFAULT_PREFILTER_DEPTH = 500

SearchMode = Literal["auto", "exact", "fast"]

#: Fetches the full ``(n_patches, dim)`` vectors of the given pages, in the given order.
RerankFn = Callable[[list[Hashable]], "Sequence[ArrayLike] | PageVectorMatrix"]


def choose_search_mode(
    n_pages: int, search_mode: SearchMode = "auto", fast_min_pages: int = FAST_MODE_MIN_PAGES
) -> Literal["exact", "fast"]:
    """Resolve ``search_mode``: ``"auto"`` is exact below ``fast_min_pages`` pages, else fast.

    Example:
        >>> choose_search_mode(500), choose_search_mode(50_000), choose_search_mode(10, "fast")
        ('exact', 'fast', 'fast')
    """
    if search_mode not in ("auto", "exact", "fast"):
        raise ValueError(f"search_mode must be 'auto', 'exact' or 'fast', got {search_mode!r}")
    if search_mode == "auto":
        return "fast" if n_pages >= fast_min_pages else "exact"
    return search_mode


class _GrowableArray:
    """A numpy array that grows along axis 0 with amortised O(1) appends."""

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype | type):
        self._buffer = np.empty((0, *row_shape), dtype=dtype)
        self.size = 0

    def append(self, rows: np.ndarray) -> None:
        needed = self.size + rows.shape[0]
        if needed > self._buffer.shape[0]:
            # Grow by a quarter: amortised O(1) appends, at most 25% unused capacity.
            capacity = max(needed, int(self._buffer.shape[0] * 1.25) + 16)
            grown = np.empty((capacity, *self._buffer.shape[1:]), dtype=self._buffer.dtype)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        self._buffer[self.size : needed] = rows
        self.size = needed

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self.size]

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes


class FastPageIndex:
    """In-memory page codes for fast multi-stage MaxSim search, with incremental add/remove.

    Args:
        pool_factor: each page's codes are ``ceil(n_patches / pool_factor)`` k-means-pooled,
            unit-norm vectors (see :func:`~llama_index_vlm.search.pooling.kmeans_pool`);
            ``1`` keeps every patch vector.
        binary_prefilter: also keep sign codes of the pooled vectors and narrow the search
            with Hamming MaxSim before the float stage (several times faster on a CPU).
        kmeans_iterations: refinement rounds of the pooling k-means.

    Memory is about ``n_pages * ceil(n_patches / pool_factor) * (2 * dim + dim / 8)`` bytes:
    ~1.8 GB for 100k ColPali pages (1030 x 128) at the default pool factor. The full vectors
    stay wherever ``rerank_fn`` reads them from.

    Page ids are any hashable values (the store's page ids); adding an id that is already
    present replaces its codes.
    """

    def __init__(
        self, pool_factor: float = 16, binary_prefilter: bool = True, kmeans_iterations: int = 3
    ) -> None:
        if pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
        self.pool_factor = pool_factor
        self.binary_prefilter = binary_prefilter
        self.kmeans_iterations = kmeans_iterations
        self.dim: int | None = None
        self._codes: _GrowableArray | None = None  # float16 (n_rows, dim) pooled vectors
        # Sign codes of the same rows: one uint64 (n_rows,) array per 64 dims, word-major so
        # that the prefilter XORs contiguous arrays.
        self._sign_words: list[_GrowableArray] = []
        self._offsets = _GrowableArray((), np.int64)
        self._offsets.append(np.zeros(1, dtype=np.int64))
        self._alive = _GrowableArray((), bool)
        self._page_ids: list[Hashable] = []
        self._slot_of: dict[Hashable, int] = {}
        self._dead_rows = 0

    # -- building -------------------------------------------------------------------------

    def add(self, page_ids: Sequence[Hashable], page_vectors: Sequence[ArrayLike]) -> None:
        """Add pages from their full ``(n_patches, dim)`` vectors (list, or 3-D array).

        Pools each page to codes; equal-length pages are pooled together in batches.
        """
        page_ids = list(page_ids)
        if len(page_ids) != len(page_vectors):
            raise ValueError(f"{len(page_ids)} page ids for {len(page_vectors)} pages")
        self.add_codes(page_ids, self.encode(page_vectors))

    def encode(self, page_vectors: Sequence[ArrayLike], batch_size: int = 32) -> list[np.ndarray]:
        """The float16 pooled codes this index would store for ``page_vectors``.

        Useful to compute codes once at ingest time, persist them next to the full vectors,
        and rebuild the index later with :meth:`add_codes` without pooling again.
        """
        pages = [np.asarray(page) if not hasattr(page, "detach") else page for page in page_vectors]
        codes: list[np.ndarray | None] = [None] * len(pages)
        by_length: dict[tuple[int, int], list[int]] = {}
        for position, page in enumerate(pages):
            if page.ndim != 2 or page.shape[0] == 0:
                raise ValueError(
                    f"page_vectors[{position}] must be a non-empty (n_patches, dim) matrix, "
                    f"got shape {tuple(page.shape)}"
                )
            by_length.setdefault(tuple(page.shape), []).append(position)
        for positions in by_length.values():
            for start in range(0, len(positions), batch_size):
                batch = positions[start : start + batch_size]
                stacked = np.stack([_as_float16(pages[i]) for i in batch])
                if self.pool_factor == 1:
                    pooled = stacked
                else:
                    pooled = kmeans_pool(stacked, self.pool_factor, self.kmeans_iterations)
                for position, page_codes in zip(batch, pooled, strict=True):
                    codes[position] = page_codes
        return codes  # type: ignore[return-value]

    def add_codes(self, page_ids: Sequence[Hashable], page_codes: Sequence[ArrayLike]) -> None:
        """Add pages from ready-made ``(n_codes, dim)`` codes (from :meth:`encode`)."""
        page_ids = list(page_ids)
        if len(page_ids) != len(page_codes):
            raise ValueError(f"{len(page_ids)} page ids for {len(page_codes)} pages")
        if len(set(page_ids)) != len(page_ids):
            raise ValueError("page_ids contains duplicates")
        if not page_ids:
            return
        matrices = [_as_float16(codes) for codes in page_codes]
        dims = {matrix.shape[1] for matrix in matrices}
        if self.dim is not None:
            dims.add(self.dim)
        if len(dims) != 1:
            raise ValueError(f"all vectors must have the same dim, got {sorted(dims)}")
        if any(matrix.shape[0] == 0 for matrix in matrices):
            raise ValueError("every page needs at least one vector")
        self.remove([page_id for page_id in page_ids if page_id in self._slot_of])
        if self.dim is None:
            self.dim = dims.pop()
        rows = np.concatenate(matrices)
        if self._codes is None:
            self._codes = _GrowableArray((self.dim,), np.float16)
        self._codes.append(rows)
        if self.binary_prefilter:
            words = binary_codes(rows)
            if not self._sign_words:
                self._sign_words = [_GrowableArray((), np.uint64) for _ in range(len(words))]
            for column, word in zip(self._sign_words, words, strict=True):
                column.append(word)
        lengths = np.array([matrix.shape[0] for matrix in matrices], dtype=np.int64)
        self._offsets.append(self._offsets.values[-1] + np.cumsum(lengths))
        self._alive.append(np.ones(len(matrices), dtype=bool))
        for page_id in page_ids:
            self._slot_of[page_id] = len(self._page_ids)
            self._page_ids.append(page_id)

    def remove(self, page_ids: Sequence[Hashable]) -> int:
        """Remove pages by id; unknown ids are ignored. Returns how many were removed."""
        removed = 0
        offsets = self._offsets.values
        for page_id in page_ids:
            slot = self._slot_of.pop(page_id, None)
            if slot is None:
                continue
            self._alive.values[slot] = False
            self._dead_rows += int(offsets[slot + 1] - offsets[slot])
            removed += 1
        # Removed pages keep their rows (masked out) until they are a quarter of the index, so
        # a stream of removals costs amortised O(1) copies per row.
        if self._codes is not None and self._dead_rows * 4 > self._codes.size:
            self._compact()
        return removed

    def _compact(self) -> None:
        alive = np.flatnonzero(self._alive.values)
        offsets = self._offsets.values
        lengths = offsets[alive + 1] - offsets[alive]
        keep_rows = np.repeat(offsets[alive], lengths) + _ranges(lengths)
        compacted = []
        for column in [self._codes, *self._sign_words]:
            kept = _GrowableArray(column.values.shape[1:], column.values.dtype)
            kept.append(column.values[keep_rows])
            compacted.append(kept)
        self._codes, self._sign_words = compacted[0], compacted[1:]
        new_offsets = _GrowableArray((), np.int64)
        new_offsets.append(np.concatenate([[0], np.cumsum(lengths)]))
        new_alive = _GrowableArray((), bool)
        new_alive.append(np.ones(alive.size, dtype=bool))
        self._offsets, self._alive = new_offsets, new_alive
        self._page_ids = [self._page_ids[slot] for slot in alive]
        self._slot_of = {page_id: slot for slot, page_id in enumerate(self._page_ids)}
        self._dead_rows = 0

    # -- inspecting -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, page_id: Hashable) -> bool:
        return page_id in self._slot_of

    @property
    def page_ids(self) -> list[Hashable]:
        """Ids of the pages in the index, in insertion order."""
        alive = self._alive.values
        return [page_id for slot, page_id in enumerate(self._page_ids) if alive[slot]]

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes and bookkeeping arrays (not the Python id objects)."""
        columns = [self._codes, *self._sign_words] if self._codes is not None else []
        return sum(column.nbytes for column in columns) + self._offsets.nbytes + self._alive.nbytes

    # -- searching ------------------------------------------------------------------------

    def candidates(
        self,
        query_vectors: ArrayLike,
        depth: int = DEFAULT_CANDIDATE_DEPTH,
        prefilter_depth: int | None = None,
        allowed: Collection[Hashable] | None = None,
    ) -> tuple[list[Hashable], np.ndarray]:
        """The ``depth`` best pages by pooled-code MaxSim: ``(page_ids, approximate_scores)``.

        With the binary prefilter on and more than ``prefilter_depth`` pages (default:
        ``max(DEFAULT_PREFILTER_DEPTH, 1% of the pages)``), only the ``prefilter_depth`` best
        pages by Hamming MaxSim are scored with the pooled codes.
        ``allowed`` restricts the search to those page ids (a metadata filter's result).
        """
        query = _as_query(query_vectors)
        if self._codes is None or len(self) == 0:
            return [], np.zeros(0, dtype=np.float32)
        if query.shape[1] != self.dim:
            raise ValueError(f"query vectors have dim {query.shape[1]}, the index has {self.dim}")
        alive = self._alive.values
        offsets = self._offsets.values
        n_alive = len(self)
        if allowed is not None:
            allowed = allowed if isinstance(allowed, (set, frozenset, dict)) else set(allowed)
            permitted = np.fromiter(
                (page_id in allowed for page_id in self._page_ids), bool, len(self._page_ids)
            )
            alive = alive & permitted
            n_alive = int(alive.sum())
            if n_alive == 0:
                return [], np.zeros(0, dtype=np.float32)
        depth = min(depth, n_alive)
        if prefilter_depth is None:
            prefilter_depth = max(DEFAULT_PREFILTER_DEPTH, n_alive // 100)
        if not (self.binary_prefilter and prefilter_depth < n_alive):
            codes = PageVectorMatrix(vectors=self._codes.values, offsets=offsets)
            scores = maxsim_scores(query, codes)[0]
            scores[~alive] = -np.inf  # removed pages sort last and are cut by depth <= n_alive
            slots, values = top_k(scores, depth)
            return [self._page_ids[slot] for slot in slots], values
        words = [column.values for column in self._sign_words]
        hamming = hamming_maxsim_scores(binary_codes(query), words, offsets, self.dim)
        hamming[~alive] = -np.inf
        slots, _ = top_k(hamming, min(max(prefilter_depth, depth), n_alive))
        # Score only the prefiltered pages' pooled codes: gather their rows into one matrix.
        lengths = offsets[slots + 1] - offsets[slots]
        rows = np.repeat(offsets[slots], lengths) + _ranges(lengths)
        slot_codes = PageVectorMatrix(
            vectors=self._codes.values[rows], offsets=np.concatenate([[0], np.cumsum(lengths)])
        )
        order, values = top_k(maxsim_scores(query, slot_codes)[0], depth)
        return [self._page_ids[slot] for slot in slots[order]], values

    def search(
        self,
        query_vectors: ArrayLike,
        k: int = 10,
        candidate_depth: int = DEFAULT_CANDIDATE_DEPTH,
        rerank_fn: RerankFn | None = None,
        prefilter_depth: int | None = None,
        allowed: Collection[Hashable] | None = None,
    ) -> tuple[list[Hashable], np.ndarray]:
        """The ``k`` best pages for one query, best first: ``(page_ids, scores)``.

        Args:
            query_vectors: ``(n_query_tokens, dim)`` query multi-vector.
            k: number of pages to return.
            candidate_depth: candidates reranked with their full vectors (at least ``k``).
            rerank_fn: ``rerank_fn(page_ids)`` returns those pages' full vectors in that order
                (a list of ``(n_patches, dim)`` arrays or a :class:`PageVectorMatrix`); the
                scores are then exact MaxSim. Without it, the top ``k`` candidates are returned
                with their approximate pooled-code scores.
            prefilter_depth: pages the binary prefilter keeps (ignored without it); default
                ``max(DEFAULT_PREFILTER_DEPTH, 1% of the pages)``.
            allowed: only these page ids may be returned (e.g. the pages matching a filter).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = _as_query(query_vectors)
        candidate_ids, approximate = self.candidates(
            query, max(candidate_depth, k), prefilter_depth, allowed
        )
        if rerank_fn is None or not candidate_ids:
            return candidate_ids[:k], approximate[:k]
        return rerank_exactly(query, candidate_ids, k, rerank_fn)


def rerank_exactly(
    query_vectors: ArrayLike, candidate_ids: list[Hashable], k: int, rerank_fn: RerankFn
) -> tuple[list[Hashable], np.ndarray]:
    """The ``k`` best of ``candidate_ids`` by exact MaxSim, best first: ``(page_ids, scores)``.

    The last stage of :meth:`FastPageIndex.search`, apart so that a caller can run it outside
    whatever guards the index (it reads no index state, only ``rerank_fn``'s vectors).

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
    query = _as_query(query_vectors)
    full_vectors = rerank_fn(candidate_ids)
    n_fetched = (
        full_vectors.n_pages if isinstance(full_vectors, PageVectorMatrix) else len(full_vectors)
    )
    if n_fetched != len(candidate_ids):
        raise ValueError(f"rerank_fn returned {n_fetched} pages for {len(candidate_ids)} ids")
    order, values = top_k(maxsim_scores(query, full_vectors)[0], k)
    return [candidate_ids[i] for i in order], values


def _as_query(query_vectors: ArrayLike) -> np.ndarray:
    query = as_float32_matrix(query_vectors, "query_vectors")
    if query.shape[0] == 0:
        raise EmptyInputError("the query has no vectors; encode a non-empty query")
    return query


def _as_float16(vectors: ArrayLike) -> np.ndarray:
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().to("cpu").float().numpy()
    matrix = np.asarray(vectors)
    return matrix if matrix.dtype == np.float16 else matrix.astype(np.float16)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts
