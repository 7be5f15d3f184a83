"""Fast multi-stage MaxSim search: compact in-memory page codes pick candidates, exact rerank.

Each page is summarised by *codes*: ``ceil(n_patches / pool_factor)`` k-means-pooled unit
vectors (``pool_factor=8`` turns 1030 ColPali patch vectors into 129), kept as float16, or as
bfloat16 on a CPU that multiplies bfloat16 faster (see
:func:`~llama_index_vlm.search.code_scores.preferred_code_dtype`). A search runs:

1. *prefilter*: centroid interaction (:mod:`~llama_index_vlm.search.centroids`) scores every
   page through a corpus-wide codebook with no per-page float maths; the best
   ``prefilter_depth`` pages go on (``prefilter="binary"``: Hamming MaxSim of sign codes,
   far coarser on some corpora; ``None``: no prefilter).
2. *candidates*: float MaxSim of the query against those pages' pooled codes.
3. *rerank* (:func:`~llama_index_vlm.search.rerank.adaptive_rerank`): the best candidates'
   full vectors, fetched through a caller-supplied function, are scored exactly, at least
   ``candidate_depth`` of them and further down the list while the scores say a page below
   could still enter the top ``k`` (at most ``max_candidate_depth``).

The scores returned are exact MaxSim scores; a page can only be missed if an approximate stage
ranks it below its depth. With ``candidate_depth`` at least the number of pages, the search is
exact.

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

import math
from collections.abc import Collection, Hashable, Sequence
from typing import Literal

import numpy as np
import torch

from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.search._growable import GrowableArray, ranges
from llama_index_vlm.search.binary import binary_codes, hamming_maxsim_scores
from llama_index_vlm.search.centroids import (
    DEFAULT_N_PROBE,
    CentroidPostings,
    assign_centroids,
    codebook_size,
    train_centroids,
)
from llama_index_vlm.search.code_scores import (
    CodeDtype,
    code_matrix,
    code_maxsim_scores,
    code_tensor,
    float16_codes,
    preferred_code_dtype,
)
from llama_index_vlm.search.maxsim import (
    ArrayLike,
    as_float32_matrix,
    tensor_view,
    top_k,
)
from llama_index_vlm.search.modes import (  # noqa: F401 - re-exported, their old home
    FAST_MODE_MIN_PAGES,
    SearchMode,
    choose_search_mode,
)
from llama_index_vlm.search.pooling import kmeans_pool
from llama_index_vlm.search.rerank import (
    DEFAULT_MAX_DEPTH,
    RerankFn,
    adaptive_rerank,
)

#: Candidates always reranked exactly with the pages' full vectors; the rerank goes deeper
#: when the scores call for it (up to ``DEFAULT_MAX_CANDIDATE_DEPTH``).
DEFAULT_CANDIDATE_DEPTH = 32

#: The most candidates one query reranks exactly.
DEFAULT_MAX_CANDIDATE_DEPTH = DEFAULT_MAX_DEPTH

#: Pages the prefilter keeps: 5% of those searched, within [512, 2048]. At 100k pages, 1,024,
#: 2,048 and 5,000 gave recall@10 0.985 at p50 47, 72, 92 ms (benchmarks/RESULTS.md).
DEFAULT_PREFILTER_DEPTH = 512
DEFAULT_PREFILTER_SHARE = 0.05
MAX_PREFILTER_DEPTH = 2048

#: Pages keep at least this many codes (all their vectors if they have fewer).
MIN_CODES_PER_PAGE = 32

#: The codebook is retrained when the index has grown this many times since it was trained.
_RETRAIN_GROWTH = 4

Prefilter = Literal["centroids", "binary"] | None


def default_prefilter_depth(n_pages: int) -> int:
    """Pages the prefilter keeps out of ``n_pages``: 5%, between 512 and 2,048."""
    share = int(n_pages * DEFAULT_PREFILTER_SHARE)
    return min(max(DEFAULT_PREFILTER_DEPTH, share), MAX_PREFILTER_DEPTH)


class FastPageIndex:
    """In-memory page codes for fast multi-stage MaxSim search, with incremental add/remove.

    Args:
        pool_factor: each page's codes are ``ceil(n_patches / pool_factor)`` (at least
            ``MIN_CODES_PER_PAGE``) k-means-pooled unit vectors (``kmeans_pool``).
        prefilter: ``"centroids"`` (centroid interaction), ``"binary"`` (Hamming MaxSim of
            sign codes) or ``None`` (score every page's pooled codes).
        kmeans_iterations: refinement rounds of the pooling k-means.
        n_probe: centroids looked up per query token by the centroid prefilter.
        code_dtype: how the codes are kept and multiplied, ``"float16"`` or ``"bfloat16"``;
            default: :func:`~llama_index_vlm.search.code_scores.preferred_code_dtype`, the
            faster on this CPU. :meth:`encode` and :meth:`page_codes` give float16 either way.

    Memory: ``(2 * dim + 4)`` bytes per code (~3.4 GB for 100k 1030 x 128 pages at the
    default pool factor); pages keep at least 32 codes. Full vectors stay with ``rerank_fn``.

    Page ids are any hashable values; adding an id already present replaces its codes. The
    codebook is trained at the first search that needs it, again when the index grew 4x.
    """

    def __init__(
        self,
        pool_factor: float = 8,
        prefilter: Prefilter = "centroids",
        kmeans_iterations: int = 3,
        n_probe: int = DEFAULT_N_PROBE,
        code_dtype: CodeDtype | None = None,
    ) -> None:
        if pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
        if prefilter not in ("centroids", "binary", None):
            raise ValueError(f"prefilter must be 'centroids', 'binary' or None, got {prefilter!r}")
        if code_dtype not in ("float16", "bfloat16", None):
            raise ValueError(f"code_dtype must be 'float16' or 'bfloat16', got {code_dtype!r}")
        self.code_dtype: CodeDtype = code_dtype or preferred_code_dtype()
        self.pool_factor = pool_factor
        self.prefilter = prefilter
        self.kmeans_iterations = kmeans_iterations
        self.n_probe = n_probe
        self.dim: int | None = None
        # (n_rows, dim) pooled vectors: float16, or bfloat16 bits (code_scores.code_matrix)
        self._codes: GrowableArray | None = None
        # Sign codes of the same rows (binary prefilter): one uint64 (n_rows,) array per 64
        # dims, word-major so that the prefilter XORs contiguous arrays.
        self._sign_words: list[GrowableArray] = []
        self._code_centroids = GrowableArray((), np.int32)  # centroid id of each code row
        self.centroids: np.ndarray | None = None
        self._trained_rows = 0
        self._postings: CentroidPostings | None = None
        self._offsets = GrowableArray((), np.int64)
        self._offsets.append(np.zeros(1, dtype=np.int64))
        self._alive = GrowableArray((), bool)
        self._page_ids: list[Hashable] = []
        self._slot_of: dict[Hashable, int] = {}
        self._dead_rows = 0

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
                factor = _page_pool_factor(stacked.shape[1], self.pool_factor)
                if factor == 1:
                    pooled = stacked
                else:
                    pooled = kmeans_pool(stacked, factor, self.kmeans_iterations)
                for position, page_codes in zip(batch, pooled, strict=True):
                    codes[position] = page_codes
        return codes  # type: ignore[return-value]

    def add_codes(
        self,
        page_ids: Sequence[Hashable],
        page_codes: Sequence[ArrayLike],
        centroid_ids: np.ndarray | None = None,
    ) -> None:
        """Add pages from ready-made ``(n_codes, dim)`` codes (from :meth:`encode`).

        ``centroid_ids``: the codes' nearest centroids in the current codebook, all pages'
        codes in order (as :meth:`code_centroid_ids` gave them), to skip assigning them again.
        """
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
        stored = code_matrix(rows, self.code_dtype)
        if self._codes is None:
            self._codes = GrowableArray((self.dim,), stored.dtype)
        self._codes.append(stored)
        if self.prefilter == "binary":
            words = binary_codes(rows)
            if not self._sign_words:
                self._sign_words = [GrowableArray((), np.uint64) for _ in range(len(words))]
            for column, word in zip(self._sign_words, words, strict=True):
                column.append(word)
        if self.centroids is not None:
            if centroid_ids is None or centroid_ids.shape != (rows.shape[0],):
                centroid_ids = assign_centroids(rows, self.centroids)
            self._code_centroids.append(centroid_ids)
        lengths = np.array([matrix.shape[0] for matrix in matrices], dtype=np.int64)
        self._offsets.append(self._offsets.values[-1] + np.cumsum(lengths))
        self._alive.append(np.ones(len(matrices), dtype=bool))
        for page_id in page_ids:
            self._slot_of[page_id] = len(self._page_ids)
            self._page_ids.append(page_id)
        self._postings = None

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
        keep_rows = np.repeat(offsets[alive], lengths) + ranges(lengths)
        columns = [self._codes, *self._sign_words]
        if self.centroids is not None:
            columns.append(self._code_centroids)
        compacted = []
        for column in columns:
            kept = GrowableArray(column.values.shape[1:], column.values.dtype)
            kept.append(column.values[keep_rows])
            compacted.append(kept)
        self._codes = compacted[0]
        self._sign_words = compacted[1 : 1 + len(self._sign_words)]
        if self.centroids is not None:
            self._code_centroids = compacted[-1]
        new_offsets = GrowableArray((), np.int64)
        new_offsets.append(np.concatenate([[0], np.cumsum(lengths)]))
        new_alive = GrowableArray((), bool)
        new_alive.append(np.ones(alive.size, dtype=bool))
        self._offsets, self._alive = new_offsets, new_alive
        self._page_ids = [self._page_ids[slot] for slot in alive]
        self._slot_of = {page_id: slot for slot, page_id in enumerate(self._page_ids)}
        self._dead_rows = 0
        self._postings = None

    def set_codebook(self, centroids: np.ndarray, trained_rows: int) -> None:
        """Use a saved codebook (:attr:`centroids`, trained on ``trained_rows`` codes).

        Only on an empty index: pages added next need their ``centroid_ids`` or are assigned.
        """
        if len(self._page_ids):
            raise ValueError("set_codebook needs an empty index")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self._trained_rows = trained_rows

    @property
    def trained_rows(self) -> int:
        """Codes the codebook was trained on (0 before training)."""
        return self._trained_rows

    def page_codes(self, page_id: Hashable) -> tuple[np.ndarray, np.ndarray | None]:
        """A page's float16 ``(codes, centroid ids)`` (ids ``None`` before the codebook is
        trained)."""
        slot = self._slot_of[page_id]
        first, last = self._offsets.values[slot], self._offsets.values[slot + 1]
        ids = self._code_centroids.values[first:last] if self.centroids is not None else None
        return float16_codes(self._codes.values[first:last]), ids

    def train_codebook(self) -> None:
        """(Re)train the centroid codebook on the current codes and re-assign every code.

        Searches do this themselves when needed; call it to pay the cost at a time of your
        choosing (e.g. right after a bulk load).
        """
        if self._codes is None or self._codes.size == 0:
            return
        codes = code_tensor(self._codes.values)
        self.centroids = train_centroids(codes, codebook_size(codes.shape[0]))
        self._code_centroids = GrowableArray((), np.int32)
        self._code_centroids.append(assign_centroids(codes, self.centroids))
        self._trained_rows = codes.shape[0]
        self._postings = None

    def prepare(self) -> None:
        """Build what the next search needs (codebook, inverted lists) now.

        A search calls this itself; after it, searches only read the index, so callers that
        guard writes with a lock can let searches run concurrently without it.
        """
        if self.prefilter == "centroids" and self._codes is not None and len(self):
            self._centroid_postings()

    @property
    def prepared(self) -> bool:
        """Whether a search would only read the index (see :meth:`prepare`)."""
        if self.prefilter != "centroids" or self._codes is None or not len(self):
            return True
        stale = self._codes.size > _RETRAIN_GROWTH * self._trained_rows
        return self._postings is not None and not stale

    def _centroid_postings(self) -> CentroidPostings:
        n_rows = self._codes.size
        if self.centroids is None or n_rows > _RETRAIN_GROWTH * self._trained_rows:
            self.train_codebook()
        if self._postings is None:
            self._postings = CentroidPostings.build(
                self._code_centroids.values, self._offsets.values, self.centroids.shape[0]
            )
        return self._postings

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
        """Bytes held by the codes, codebook and bookkeeping arrays (not the Python ids)."""
        columns = [self._codes, *self._sign_words] if self._codes is not None else []
        total = sum(column.nbytes for column in columns) + self._code_centroids.nbytes
        total += 0 if self.centroids is None else self.centroids.nbytes
        total += 0 if self._postings is None else self._postings.nbytes
        return total + self._offsets.nbytes + self._alive.nbytes

    def _searchable(self, allowed: Collection[Hashable] | None) -> np.ndarray:
        """Mask of the slots a search may return: alive, and in ``allowed`` if given."""
        alive = self._alive.values
        if allowed is None:
            return alive
        allowed = allowed if isinstance(allowed, (set, frozenset, dict)) else set(allowed)
        permitted = np.fromiter(
            (page_id in allowed for page_id in self._page_ids), bool, len(self._page_ids)
        )
        return alive & permitted

    def _prefiltered_slots(
        self, query: np.ndarray, searchable: np.ndarray, depth: int
    ) -> np.ndarray:
        """The ``depth`` best searchable slots by the prefilter's approximate scores."""
        if self.prefilter == "binary":
            words = [column.values for column in self._sign_words]
            scores = hamming_maxsim_scores(
                binary_codes(query), words, self._offsets.values, self.dim
            )
        else:
            postings = self._centroid_postings()
            # torch, not numpy: numpy's BLAS keeps its own threads spinning after the product.
            similarity = torch.mm(torch.from_numpy(query), tensor_view(self.centroids).T)
            scores = postings.scores(similarity.numpy(), self.n_probe)
        scores[~searchable] = -np.inf
        return top_k(scores, depth)[0]

    def candidates(
        self,
        query_vectors: ArrayLike,
        depth: int = DEFAULT_MAX_CANDIDATE_DEPTH,
        prefilter_depth: int | None = None,
        allowed: Collection[Hashable] | None = None,
    ) -> tuple[list[Hashable], np.ndarray]:
        """The ``depth`` best pages by pooled-code MaxSim: ``(page_ids, approximate_scores)``.

        With a prefilter and more than ``prefilter_depth`` pages (default:
        :func:`default_prefilter_depth`), only the prefilter's ``prefilter_depth`` best pages
        are scored with the pooled codes. ``allowed`` restricts the search to those page ids
        (a metadata filter's result).
        """
        query = _as_query(query_vectors)
        if self._codes is None or len(self) == 0:
            return [], np.zeros(0, dtype=np.float32)
        if query.shape[1] != self.dim:
            raise ValueError(f"query vectors have dim {query.shape[1]}, the index has {self.dim}")
        searchable = self._searchable(allowed)
        n_searchable = int(searchable.sum())
        if n_searchable == 0:
            return [], np.zeros(0, dtype=np.float32)
        depth = min(depth, n_searchable)
        if prefilter_depth is None:
            prefilter_depth = default_prefilter_depth(n_searchable)
        prefilter_depth = max(prefilter_depth, depth)
        offsets = self._offsets.values
        if self.prefilter is None or prefilter_depth >= n_searchable:
            slots = np.flatnonzero(searchable)
        else:
            # Ascending slots read the codes in memory order.
            slots = np.sort(self._prefiltered_slots(query, searchable, prefilter_depth))
        scores = code_maxsim_scores(query, self._codes.values, offsets, slots)
        order, values = top_k(scores, depth)
        page_ids = self._page_ids  # Python ints index the list without numpy's scalar boxing
        best = [page_ids[slot] for slot in slots[order].tolist()]
        return _ties_by_page_id(best, values), values

    def search(
        self,
        query_vectors: ArrayLike,
        k: int = 10,
        candidate_depth: int = DEFAULT_CANDIDATE_DEPTH,
        rerank_fn: RerankFn | None = None,
        prefilter_depth: int | None = None,
        allowed: Collection[Hashable] | None = None,
        max_candidate_depth: int = DEFAULT_MAX_CANDIDATE_DEPTH,
    ) -> tuple[list[Hashable], np.ndarray]:
        """The ``k`` best pages for one query, best first: ``(page_ids, scores)``.

        Args:
            query_vectors: ``(n_query_tokens, dim)`` query multi-vector.
            k: number of pages to return.
            candidate_depth: candidates always reranked with their full vectors (at least
                ``k``); the rerank goes deeper when the scores call for it.
            rerank_fn: ``rerank_fn(page_ids)`` returns those pages' full vectors in that order
                (a list of ``(n_patches, dim)`` arrays or a :class:`PageVectorMatrix`); the
                scores are then exact MaxSim. Without it, the top ``k`` candidates are returned
                with their approximate pooled-code scores.
            prefilter_depth: pages the prefilter keeps; default
                :func:`default_prefilter_depth` of the pages searched.
            allowed: only these page ids may be returned (e.g. the pages matching a filter).
            max_candidate_depth: the most candidates reranked (at least ``candidate_depth``).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = _as_query(query_vectors)
        min_depth = max(candidate_depth, k)
        max_depth = max(max_candidate_depth, min_depth)
        candidate_ids, approximate = self.candidates(query, max_depth, prefilter_depth, allowed)
        if rerank_fn is None or not candidate_ids:
            return candidate_ids[:k], approximate[:k]
        result = adaptive_rerank(
            query,
            candidate_ids,
            approximate,
            k,
            rerank_fn,
            min_depth=min_depth,
            max_depth=max_depth,
        )
        return result.page_ids, result.scores


def _ties_by_page_id(page_ids: list[Hashable], scores: np.ndarray) -> list[Hashable]:
    """``page_ids`` (best first by ``scores``) with each run of equal scores in page id order.

    Equal pooled-code scores come from equal pages (a page stored twice). Their exact scores tie
    too, and the rerank keeps the earlier of tied candidates; ordering twins by page id makes
    fast mode return the same twin, in the same order, as exact search, whatever order the
    pages were added in. Ids that cannot be compared keep the order they were added in.
    """
    runs = np.flatnonzero(scores[1:] != scores[:-1]) + 1
    if runs.size == len(page_ids) - 1:
        return page_ids  # no ties: the usual case
    bounds = [0, *runs.tolist(), len(page_ids)]
    ordered = list(page_ids)
    try:
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            if stop - start > 1:
                ordered[start:stop] = sorted(ordered[start:stop])
    except TypeError:
        return page_ids
    return ordered


def _page_pool_factor(n_vectors: int, pool_factor: float) -> float:
    """The pool factor for a page of ``n_vectors``: ``pool_factor``, but never fewer than
    ``MIN_CODES_PER_PAGE`` codes (short pages, e.g. pooled at ingest or from a small model,
    keep every vector: pooling 23 vectors to 3 lost most of the exact top 10)."""
    n_codes = min(n_vectors, max(math.ceil(n_vectors / pool_factor), MIN_CODES_PER_PAGE))
    return 1 if n_codes == n_vectors else n_vectors / n_codes


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
