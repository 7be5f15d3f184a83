"""The store's pages in memory for the retriever: one small class per search mode.

- :class:`ExactPageCache`: every page's full vectors, packed for exact MaxSim (also kept on
  a torch device, a GPU, and scored there when given one).
- :class:`FastPageCache`: compact page codes (:class:`~llama_index_vlm.search.FastPageIndex`)
  that pick candidates, reranked exactly with full vectors read from the store.

Both follow the store's table version: :meth:`PageCache.refresh` reads only what changed
(pages whose content hash is new are loaded, pages no longer stored are dropped), and
:meth:`PageCache.search` answers at one table version. :func:`shared_page_cache` gives every
retriever over one store object the same cache of a kind, so pages are held once.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch

from llama_index_vlm.retriever.fast_index_files import FastIndexFiles
from llama_index_vlm.retriever.rwlock import ReadWriteLock
from llama_index_vlm.retriever.search_slots import rerank_threads
from llama_index_vlm.search import (
    DEFAULT_MAX_CANDIDATE_DEPTH,
    DevicePageMatrix,
    FastPageIndex,
    PageVectorMatrix,
    adaptive_rerank,
    exact_top_k,
    page_vector_norms,
)
from llama_index_vlm.store import LanceDBPageStore

#: Pages read from the store per call while a fast cache loads changed pages.
_FAST_LOAD_CHUNK = 256


class PageCache(ABC):
    """The pages of one store at the last table version refreshed to, for one way of searching.

    Subclasses say what they keep (:meth:`_update`) and how they rank it (:meth:`search`);
    the version bookkeeping and the diff against the stored content hashes live here.
    """

    def __init__(self, store: LanceDBPageStore) -> None:
        self.store = store
        #: Held while the cache changes, and while a search reads what a refresh could change.
        self.lock = threading.RLock()
        self.version = -1
        self.hashes: dict[str, str] = {}

    def refresh(self, version: int) -> None:
        """Bring the cache to table ``version``, loading only pages whose content changed."""
        with self.lock:
            if version == self.version:
                return
            hashes = self.store.page_hashes(version=version)
            removed = [page_id for page_id in self.hashes if page_id not in hashes]
            changed = [page_id for page_id, h in hashes.items() if self.hashes.get(page_id) != h]
            self._update(version, hashes, changed, removed)
            self.hashes = dict(hashes)
            self.version = version

    @abstractmethod
    def _update(
        self, version: int, hashes: dict[str, str], changed: list[str], removed: list[str]
    ) -> None:
        """Apply one refresh: load the ``changed`` pages at ``version``, drop the ``removed``."""

    @abstractmethod
    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        *,
        version: int,
        allowed: set[str] | None = None,
        candidate_depth: int = 1,
    ) -> list[tuple[str, float]]:
        """The best ``k`` ``(page_id, score)`` pairs at table ``version``, best first.

        ``allowed`` restricts the pages searched (the ids matching the filters);
        ``candidate_depth`` is how many candidates an approximate cache reranks exactly.
        A search refreshes the cache to ``version`` first, under the lock: a concurrent query
        that read an older version may have moved it back since this query refreshed it, and
        searching that older version would miss pages committed before this query began.
        """


@dataclass(frozen=True)
class _ExactSnapshot:
    """All page vectors of one table version, packed for exact MaxSim. Never mutated."""

    page_ids: list[str]
    matrix: PageVectorMatrix | None
    #: each page's largest vector norm, kept so a refresh measures only the pages it loads
    page_norms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    #: the same pages on the cache's search device, if it has one
    on_device: DevicePageMatrix | None = None

    @property
    def vector_norm(self) -> float:
        """The largest vector norm of all pages: it bounds float16 screening's error."""
        return float(self.page_norms.max()) if self.page_norms.size else 0.0


class ExactPageCache(PageCache):
    """Every page's full vectors; a search scores them all by exact MaxSim
    (:func:`~llama_index_vlm.search.exact_top_k`).

    A refresh swaps in a new immutable snapshot, so queries already running keep theirs and
    score outside the lock.

    Args:
        store: the page store.
        device: a torch device (e.g. ``cuda``) to keep every page's vectors on and score
            them there (:class:`~llama_index_vlm.search.DevicePageMatrix`); None scores them
            on the CPU, screened with float16 products. A refresh uploads the whole snapshot.
    """

    def __init__(self, store: LanceDBPageStore, device: torch.device | None = None) -> None:
        super().__init__(store)
        self.device = device
        self._snapshot = _ExactSnapshot(page_ids=[], matrix=None)

    def _update(
        self, version: int, hashes: dict[str, str], changed: list[str], removed: list[str]
    ) -> None:
        vectors, norms = {}, {}
        kept = set(hashes) - set(changed)
        old = self._snapshot
        for position, page_id in enumerate(old.page_ids):
            if page_id in kept:
                vectors[page_id] = old.matrix.page(position)
                norms[page_id] = old.page_norms[position]
        if changed:
            loaded = self.store.get_page_vectors(changed, version=version)
            vectors.update(zip(changed, loaded, strict=True))
            # Only the CPU's float16 screening needs the norms (0.13 s per 1,000 pages).
            measured = page_vector_norms(loaded) if self.device is None else [0.0] * len(loaded)
            norms.update(zip(changed, measured, strict=True))
        page_ids = sorted(vectors)
        if not page_ids:
            self._snapshot = _ExactSnapshot([], None)
            return
        matrix = PageVectorMatrix.from_pages([vectors[i] for i in page_ids])
        page_norms = np.array([norms[i] for i in page_ids], dtype=np.float32)
        on_device = None
        if self.device is not None:
            # Let the old pages' device memory go before the new ones arrive; should the upload
            # fail (no room), the next refresh reloads every page.
            del old
            self._snapshot = _ExactSnapshot([], None)
            self.hashes, self.version = {}, -1
            on_device = DevicePageMatrix(matrix, self.device)
        self._snapshot = _ExactSnapshot(page_ids, matrix, page_norms, on_device)

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        *,
        version: int,
        allowed: set[str] | None = None,
        candidate_depth: int = 1,
    ) -> list[tuple[str, float]]:
        with self.lock:
            self.refresh(version)
            snapshot = self._snapshot  # a later refresh swaps it, never mutates it
        if snapshot.matrix is None:
            return []
        keep = None
        if allowed is not None:
            keep = np.fromiter((i in allowed for i in snapshot.page_ids), bool)
        if snapshot.on_device is not None:
            positions, values = snapshot.on_device.top_k(query_vectors, k, keep=keep)
        else:
            positions, values = exact_top_k(
                query_vectors, snapshot.matrix, k, keep=keep, vector_norm=snapshot.vector_norm
            )
        return _finite_hits([snapshot.page_ids[p] for p in positions], values)


class FastPageCache(PageCache):
    """Compact page codes in memory; a search picks candidates from them, then reranks at
    least ``candidate_depth`` of them exactly with their full vectors read from the store,
    more where the scores say a page further down may still rank in the top ``k``.

    The codes are updated in place under the write side of a read-write lock and searched
    under its read side, so concurrent queries run together; the rerank reads vectors
    outside the lock. For a local store the index is persisted beside the table
    (:mod:`~llama_index_vlm.retriever.fast_index_files`): a new process loads the pages whose
    content is unchanged from there, and the rerank reads memory-mapped vectors instead of
    LanceDB rows.
    """

    def __init__(self, store: LanceDBPageStore) -> None:
        super().__init__(store)
        self._index = FastPageIndex()
        self._readers_writer = ReadWriteLock()
        self._files = FastIndexFiles.beside(store.uri, store.table_name)
        self._files_loaded = False

    def refresh(self, version: int) -> None:
        if self.version == version:
            return  # nothing to change: no need to wait for the searches reading the index
        self._readers_writer.acquire_write()
        try:
            super().refresh(version)
        finally:
            self._readers_writer.release_write()

    def _update(
        self, version: int, hashes: dict[str, str], changed: list[str], removed: list[str]
    ) -> None:
        files = self._files
        if files is not None and not self._files_loaded:
            self._files_loaded = True
            restored = set(files.load(self._index, hashes)) if not len(self._index) else set()
            changed = [page_id for page_id in changed if page_id not in restored]
        if removed:
            self._index.remove(removed)
        for start in range(0, len(changed), _FAST_LOAD_CHUNK):
            chunk = changed[start : start + _FAST_LOAD_CHUNK]
            vectors = self.store.get_page_vectors(chunk, version=version)
            self._index.add(chunk, vectors)
            if files is not None:
                files.add_segment(self._index, dict(zip(chunk, vectors, strict=True)), hashes)
        if files is not None and (changed or removed or files.version != version):
            self._index.prepare()
            files.commit(version, self._index, hashes)

    def _rerank_vectors(self, page_ids: list[str], version: int) -> list[np.ndarray]:
        """Full vectors of ``page_ids``: memory-mapped from the saved index, else from the store."""
        saved = self._files.reader() if self._files is not None else lambda ids: [None] * len(ids)
        vectors = saved(page_ids)
        missing = [page_id for page_id, v in zip(page_ids, vectors, strict=True) if v is None]
        if missing:
            fetched = self.store.get_page_vectors(missing, version=version)
            read = dict(zip(missing, fetched, strict=True))
            vectors = [read[i] if v is None else v for i, v in zip(page_ids, vectors, strict=True)]
        return vectors

    def _read_at(self, version: int) -> None:
        """Hold the read lock with the index at ``version`` and ready to search."""
        lock = self._readers_writer
        lock.acquire_read()
        if self.version == version and self._index.prepared:
            return
        lock.release_read()
        lock.acquire_write()
        try:
            PageCache.refresh(self, version)
            self._index.prepare()  # after this, a search only reads the index
        finally:
            lock.downgrade()

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        *,
        version: int,
        allowed: set[str] | None = None,
        candidate_depth: int = 1,
    ) -> list[tuple[str, float]]:
        depth = max(DEFAULT_MAX_CANDIDATE_DEPTH, candidate_depth, k)
        self._read_at(version)
        try:
            if len(self._index) == 0:
                return []
            candidate_ids, approximate = self._index.candidates(
                query_vectors, depth, allowed=allowed
            )
        finally:
            self._readers_writer.release_read()
        with rerank_threads():  # one OpenMP thread where the team only costs (search_slots)
            result = adaptive_rerank(
                query_vectors,
                candidate_ids,
                approximate,
                k,
                lambda ids: self._rerank_vectors(ids, version),
                min_depth=max(candidate_depth, k),
                max_depth=depth,
            )
        return _finite_hits(result.page_ids, result.scores)


def _finite_hits(page_ids: list[str], scores: np.ndarray) -> list[tuple[str, float]]:
    """``(page_id, score)`` pairs, leaving out pages scored -inf (filtered out or padding)."""
    return [
        (page_id, float(score))
        for page_id, score in zip(page_ids, scores, strict=True)
        if np.isfinite(score)
    ]


class PageCacheHolder:
    """Keeps the page cache its retrievers used last loaded after they are gone.

    Caches are shared weakly (:func:`shared_page_cache`): a cache lives while a retriever
    holds it. A retriever made per request (``ColPaliRetriever(encoder, store)`` or
    ``index.as_retriever()`` in a web handler, a query engine per question) would then load
    every page from the store again on each request. Each store object has a holder
    (:func:`store_cache_holder`) that every retriever over it uses unless given another, so the
    cache lives as long as the store object. Only the cache used last is held: once a store
    that outgrew exact mode has run a fast search, its exact cache can go.
    """

    def __init__(self) -> None:
        self.cache: PageCache | None = None

    def hold(self, cache: PageCache) -> None:
        """Keep ``cache`` (and let the one held before go, unless a retriever holds it)."""
        self.cache = cache


_HOLDERS_LOCK = threading.Lock()


def store_cache_holder(store: LanceDBPageStore) -> PageCacheHolder:
    """The holder that keeps ``store``'s last used page cache loaded while the store object
    lives (made at the first call). The cache refers to the store, so the two go together,
    at the garbage collector's next pass once nothing else holds either."""
    with _HOLDERS_LOCK:
        holder = store._page_cache_holder
        if holder is None:
            holder = store._page_cache_holder = PageCacheHolder()
        return holder


#: Page caches by ``id(store)``, then by cache class, held weakly: a cache lives while a
#: retriever holds it. A cache holds its store, so an id is not reused while its caches live.
_SHARED_CACHES: dict[int, weakref.WeakValueDictionary[type, PageCache]] = {}
_SHARED_CACHES_LOCK = threading.Lock()


def shared_page_cache(
    store: LanceDBPageStore, kind: type[PageCache], device: torch.device | None = None
) -> PageCache:
    """The ``kind`` cache of ``store`` (on search ``device``, for an :class:`ExactPageCache`),
    shared by every retriever over that store object that searches there.

    Each ``index.as_query_engine()`` and ``as_retriever(...)`` copy makes a retriever; sharing
    keeps the store's pages in memory once, and a page loaded by one is not loaded again.
    """
    with _SHARED_CACHES_LOCK:
        for key in [key for key, caches in _SHARED_CACHES.items() if not caches]:
            del _SHARED_CACHES[key]
        caches = _SHARED_CACHES.setdefault(id(store), weakref.WeakValueDictionary())
        cache = caches.get((kind, device))
        if cache is None or cache.store is not store:
            cache = kind(store) if device is None else kind(store, device=device)
            caches[(kind, device)] = cache
        return cache
