"""ColPaliRetriever: late-interaction page retrieval as a native LlamaIndex retriever.

The retriever keeps the store's page vectors (exact mode) or compact page codes (fast mode) in
memory, refreshed incrementally whenever the store's table version changes, and scores queries
with the pure search functions of :mod:`llama_index_vlm.search`. Results are the store's
``ImageNode`` pages with their MaxSim scores, best first.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from PIL import Image

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.search import (
    DEFAULT_CANDIDATE_DEPTH,
    FAST_MODE_MIN_PAGES,
    FastPageIndex,
    PageVectorMatrix,
    choose_search_mode,
    maxsim_scores,
    rerank_exactly,
    top_k,
)
from llama_index_vlm.store import LanceDBPageStore

SearchMode = Literal["auto", "exact", "fast"]
_SETTINGS = ("similarity_top_k", "filters", "search_mode", "candidate_depth", "fast_min_pages")


@dataclass(frozen=True)
class _ExactSnapshot:
    """All page vectors of one table version, packed for exact MaxSim. Never mutated."""

    version: int
    page_ids: list[str]
    hashes: dict[str, str]
    matrix: PageVectorMatrix | None


class _PageCache:
    """The store's pages in memory for one search mode, refreshed from the table version.

    A refresh reads only what changed: pages whose content hash is new are loaded, pages no
    longer stored are dropped. Exact mode swaps in a new immutable snapshot, so queries already
    running keep theirs; the fast index is updated in place under a lock.
    """

    def __init__(self, store: LanceDBPageStore, mode: Literal["exact", "fast"]):
        self.store = store
        self.mode = mode
        self.lock = threading.RLock()
        self.exact = _ExactSnapshot(version=-1, page_ids=[], hashes={}, matrix=None)
        self.fast = FastPageIndex() if mode == "fast" else None
        self.fast_hashes: dict[str, str] = {}
        self.version = -1

    def refresh(self, version: int) -> None:
        with self.lock:
            if version == self.version:
                return
            hashes = self.store.page_hashes(version=version)
            known = self.exact.hashes if self.mode == "exact" else self.fast_hashes
            removed = [page_id for page_id in known if page_id not in hashes]
            changed = [page_id for page_id, h in hashes.items() if known.get(page_id) != h]
            if self.mode == "exact":
                self._refresh_exact(version, hashes, changed)
            else:
                self._refresh_fast(version, hashes, changed, removed)
            self.version = version

    def _refresh_exact(self, version: int, hashes: dict[str, str], changed: list[str]) -> None:
        vectors = {}
        if self.exact.matrix is not None:
            kept = set(hashes) - set(changed)
            for position, page_id in enumerate(self.exact.page_ids):
                if page_id in kept:
                    vectors[page_id] = self.exact.matrix.page(position)
        if changed:
            loaded = self.store.get_page_vectors(changed, version=version)
            vectors.update(zip(changed, loaded, strict=True))
        page_ids = sorted(vectors)
        matrix = PageVectorMatrix.from_pages([vectors[i] for i in page_ids]) if page_ids else None
        self.exact = _ExactSnapshot(version, page_ids, dict(hashes), matrix)

    def _refresh_fast(
        self, version: int, hashes: dict[str, str], changed: list[str], removed: list[str]
    ) -> None:
        if removed:
            self.fast.remove(removed)
        for start in range(0, len(changed), 256):
            chunk = changed[start : start + 256]
            self.fast.add(chunk, self.store.get_page_vectors(chunk, version=version))
        self.fast_hashes = dict(hashes)

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        allowed: set[str] | None,
        candidate_depth: int,
        version: int,
    ) -> list[tuple[str, float]]:
        """The best ``k`` pages at table ``version``.

        The cache is refreshed to ``version`` first, under the lock: a concurrent query that
        read an older version may have moved it back since this query refreshed it, and
        searching that older version would miss pages committed before this query began.
        """
        if self.mode == "exact":
            with self.lock:
                self.refresh(version)
                snapshot = self.exact  # a later refresh swaps it, never mutates it
            if snapshot.matrix is None:
                return []
            scores = maxsim_scores(query_vectors, snapshot.matrix)[0]
            if allowed is not None:
                keep = np.fromiter((i in allowed for i in snapshot.page_ids), bool)
                scores = np.where(keep, scores, -np.inf)
            positions, values = top_k(scores, min(k, len(snapshot.page_ids)))
            return [
                (snapshot.page_ids[p], float(v))
                for p, v in zip(positions, values, strict=True)
                if np.isfinite(v)
            ]
        with self.lock:
            self.refresh(version)
            if len(self.fast) == 0:
                return []
            candidate_ids, _ = self.fast.candidates(
                query_vectors, max(candidate_depth, k), allowed=allowed
            )
        # The rerank reads the candidates' vectors from the store, outside the lock: concurrent
        # queries wait for each other only during the in-memory stages.
        page_ids, scores = rerank_exactly(
            query_vectors,
            candidate_ids,
            k,
            lambda ids: self.store.get_page_vectors(ids, version=version),
        )
        return [
            (page_id, float(score))
            for page_id, score in zip(page_ids, scores, strict=True)
            if np.isfinite(score)
        ]


#: Page caches by ``id(store)``, then by mode, held weakly: a cache lives while a retriever
#: holds it. A cache holds its store, so an id is not reused while its caches are alive.
_SHARED_CACHES: dict[int, weakref.WeakValueDictionary[str, _PageCache]] = {}
_SHARED_CACHES_LOCK = threading.Lock()


def _shared_page_cache(store: LanceDBPageStore, mode: Literal["exact", "fast"]) -> _PageCache:
    """The page cache of ``store`` in ``mode``, shared by every retriever over that store object.

    Each ``index.as_query_engine()`` and ``as_retriever(...)`` copy makes a retriever; sharing
    keeps the store's pages in memory once, and a page loaded by one is not loaded again.
    """
    with _SHARED_CACHES_LOCK:
        for key in [key for key, caches in _SHARED_CACHES.items() if not caches]:
            del _SHARED_CACHES[key]
        caches = _SHARED_CACHES.setdefault(id(store), weakref.WeakValueDictionary())
        cache = caches.get(mode)
        if cache is None or cache.store is not store:
            cache = caches[mode] = _PageCache(store, mode)
        return cache


class ColPaliRetriever(BaseRetriever):
    """Retrieve pages by late interaction (MaxSim) from a :class:`LanceDBPageStore`.

    Args:
        encoder: embeds the queries; must be the encoder that embedded the pages (checked
            against the store's fingerprint).
        store: the page store.
        similarity_top_k: pages returned per query.
        filters: LlamaIndex ``MetadataFilters`` on page fields or your own metadata.
        search_mode: ``"exact"`` scores every page; ``"fast"`` scores compact in-memory page
            codes and reranks the best ``candidate_depth`` pages exactly; ``"auto"`` is exact
            below ``fast_min_pages`` pages and fast above.
        candidate_depth: pages reranked exactly in fast mode.
        fast_min_pages: the store size at which ``"auto"`` switches to fast.

    Queries are strings, or a ``QueryBundle`` whose ``image_path`` names an image to search
    with (a page-like query). ``aretrieve`` runs the model and the search in a worker thread,
    so the event loop stays free.

    Example::

        retriever = ColPaliRetriever(encoder=encoder, store=store, similarity_top_k=3)
        for hit in retriever.retrieve("What was the 2023 revenue?"):
            print(hit.node.metadata["file_name"], hit.node.metadata["page_number"], hit.score)
    """

    def __init__(
        self,
        encoder: ColPaliEncoder,
        store: LanceDBPageStore,
        similarity_top_k: int = 5,
        filters: MetadataFilters | None = None,
        search_mode: SearchMode = "auto",
        candidate_depth: int = DEFAULT_CANDIDATE_DEPTH,
        fast_min_pages: int = FAST_MODE_MIN_PAGES,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be at least 1, not {similarity_top_k}")
        if candidate_depth < 1:
            raise ValueError(f"candidate_depth must be at least 1, not {candidate_depth}")
        choose_search_mode(0, search_mode)  # validates the name
        self.encoder = encoder
        self.store = store
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.search_mode = search_mode
        self.candidate_depth = candidate_depth
        self.fast_min_pages = fast_min_pages
        self._cache: _PageCache | None = None
        self._cache_lock = threading.Lock()
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def as_retriever(self, **settings: Any) -> ColPaliRetriever:
        """This retriever, or a copy with other settings (``similarity_top_k``, ``filters``...).

        LlamaIndex's ``CitationQueryEngine.from_args(index, ...)`` calls
        ``index.as_retriever()``; this lets a retriever stand where an index is expected.
        """
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise TypeError(f"unknown retriever settings: {sorted(unknown)}")
        if not settings:
            return self
        current = {name: getattr(self, name) for name in _SETTINGS}
        return ColPaliRetriever(
            self.encoder,
            self.store,
            **{**current, **settings},
            callback_manager=self.callback_manager,
        )

    @property
    def resolved_search_mode(self) -> Literal["exact", "fast"]:
        """The mode the next query will use, resolving ``"auto"`` by the store's size."""
        return choose_search_mode(self.store.count(), self.search_mode, self.fast_min_pages)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query_vectors = self._query_vectors(query_bundle)
        version = self.store.version
        if version == 0:
            return []  # no table yet: nothing indexed
        self.store.check_fingerprint(self.encoder.fingerprint, query_vectors.shape[1])
        cache = self._refreshed_cache(version)
        allowed = None
        if self.filters is not None and self.filters.filters:
            allowed = set(self.store.page_ids(filters=self.filters, version=version))
            if not allowed:
                return []
        hits = cache.search(
            query_vectors, self.similarity_top_k, allowed, self.candidate_depth, version
        )
        if not hits:
            return []
        nodes = {node.node_id: node for node in self.store.get_nodes([i for i, _ in hits])}
        # A page deleted since the searched version is left out rather than returned stale.
        return [NodeWithScore(node=nodes[i], score=s) for i, s in hits if i in nodes]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _query_vectors(self, query_bundle: QueryBundle) -> np.ndarray:
        if query_bundle.image_path:
            try:
                with Image.open(query_bundle.image_path) as image:
                    image.load()
                    return self.encoder.embed_images([image], show_progress=False)[0]
            except (OSError, Image.DecompressionBombError) as error:
                raise UnreadableDocumentError(query_bundle.image_path, str(error)) from error
        if not query_bundle.query_str or not query_bundle.query_str.strip():
            raise EmptyInputError("the query is empty; ask a question in words, or give an image")
        return self.encoder.embed_queries([query_bundle.query_str], show_progress=False)[0]

    def _refreshed_cache(self, version: int) -> _PageCache:
        mode = choose_search_mode(self.store.count(), self.search_mode, self.fast_min_pages)
        with self._cache_lock:
            cache = self._cache
            if cache is None or cache.mode != mode or cache.store is not self.store:
                # A retriever holds its cache; one it no longer uses (the store outgrew exact
                # mode) is freed once no other retriever holds it either.
                cache = self._cache = _shared_page_cache(self.store, mode)
        cache.refresh(version)
        return cache

    def to_dict(self) -> dict[str, Any]:
        """The retriever's configuration (store and encoder by reference), JSON-able."""
        return {
            "class_name": "ColPaliRetriever",
            "similarity_top_k": self.similarity_top_k,
            "filters": self.filters.model_dump(mode="json") if self.filters else None,
            "search_mode": self.search_mode,
            "candidate_depth": self.candidate_depth,
            "fast_min_pages": self.fast_min_pages,
            "store": self.store.to_dict(),
            "encoder": {
                "name_or_path": self.encoder.name_or_path,
                "revision": self.encoder.revision,
            },
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], encoder: ColPaliEncoder | None = None
    ) -> ColPaliRetriever:
        """Rebuild a retriever from :meth:`to_dict`; loads the encoder unless one is given."""
        if encoder is None:
            encoder = ColPaliEncoder.from_pretrained(
                data["encoder"]["name_or_path"], revision=data["encoder"].get("revision")
            )
        filters = MetadataFilters.model_validate(data["filters"]) if data.get("filters") else None
        return cls(
            encoder=encoder,
            store=LanceDBPageStore.from_dict(data["store"]),
            similarity_top_k=data["similarity_top_k"],
            filters=filters,
            search_mode=data["search_mode"],
            candidate_depth=data["candidate_depth"],
            fast_min_pages=data.get("fast_min_pages", FAST_MODE_MIN_PAGES),
        )
