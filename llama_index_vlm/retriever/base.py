"""ColPaliRetriever: late-interaction page retrieval as a native LlamaIndex retriever.

The retriever keeps the store's pages in memory in a page cache of its search mode
(:mod:`~llama_index_vlm.retriever.page_caches`), refreshed incrementally whenever the store's
table version changes. Results are the store's ``ImageNode`` pages with their MaxSim scores
(raw or per query token), best first; ``search_mode="hybrid"`` fuses them with a BM25 search of
the pages' text (:mod:`~llama_index_vlm.retriever.ranking`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.reader.query_images import load_query_image
from llama_index_vlm.retriever.page_caches import (
    ExactPageCache,
    FastPageCache,
    PageCache,
    PageCacheHolder,
    shared_page_cache,
    store_cache_holder,
)
from llama_index_vlm.retriever.ranking import (
    SCORE_KINDS,
    ScoreKind,
    hybrid_ranking,
    scored_nodes,
    visual_ranking,
)
from llama_index_vlm.retriever.search_processes import (
    SearchProcessesUnavailable,
    shared_search_processes,
)
from llama_index_vlm.retriever.search_slots import search_slot
from llama_index_vlm.search import (
    DEFAULT_CANDIDATE_DEPTH,
    FAST_MODE_MIN_PAGES,
    PageVectorMatrix,
    choose_search_mode,
    maxsim_scores,
    resolve_search_device,
)
from llama_index_vlm.search.fast import SearchMode
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.text_search import search_pages

#: The settings :meth:`ColPaliRetriever.as_retriever` copies and accepts.
RETRIEVER_SETTINGS = (
    "similarity_top_k",
    "filters",
    "search_mode",
    "candidate_depth",
    "fast_min_pages",
    "score",
    "search_device",
    "search_processes",
)

#: The search modes of a retriever: the visual ones, and visual fused with text.
SEARCH_MODES = ("auto", "exact", "fast", "hybrid")

_PAGE_CACHES: dict[str, type[PageCache]] = {"exact": ExactPageCache, "fast": FastPageCache}


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
            below ``fast_min_pages`` pages and fast above; ``"hybrid"`` fuses the ``"auto"``
            visual ranking with a BM25 search of the pages' text (their text layer, read with
            ``PDFPageReader(extract_text=True)``) by reciprocal rank, each page once, its score
            the fused one (best ``candidate_depth`` pages of each ranking).
        candidate_depth: pages always reranked exactly in fast mode (the rerank reads further
            down the candidates when their scores say a page there may still rank in the top
            ``similarity_top_k``), and fused in hybrid mode.
        fast_min_pages: the store size at which ``"auto"`` switches to fast.
        score: ``"maxsim"`` (raw MaxSim, which grows with the query's length) or
            ``"normalized"`` (MaxSim per query token, in [-1, 1], for similarity cutoffs).
            The raw score is kept in ``node.metadata["maxsim_score"]`` either way.
        search_device: a torch device (``"cuda"``, ``"cuda:1"``) to keep every page's vectors
            on and run exact search there, in float32
            (:class:`~llama_index_vlm.search.DevicePageMatrix`); with one, ``"auto"`` (and
            the visual half of ``"hybrid"``) is always exact. The store's vectors must fit in
            the device's memory (100,000 ColPali pages: 25 GiB). ``"fast"`` still runs on the
            CPU. None (the default) searches on the CPU.
        search_processes: run fast searches in this many worker processes, shared by the
            retrievers over this store object
            (:mod:`~llama_index_vlm.retriever.search_processes`): for many query threads (a
            server) on several cores, where threads of one process wait on each other's Python.
            Each worker keeps its own copy of the page codes. None (the default): searches run
            in the calling thread.
        cache_holder: keeps the page cache this retriever loads alive after the retriever is
            gone (:class:`~llama_index_vlm.retriever.page_caches.PageCacheHolder`). None (the
            default): the store object's own holder, so retrievers made per request over one
            store find its pages loaded; pass a new ``PageCacheHolder()`` to keep the cache
            only as long as that holder.

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
        search_mode: SearchMode | Literal["hybrid"] = "auto",
        candidate_depth: int = DEFAULT_CANDIDATE_DEPTH,
        fast_min_pages: int = FAST_MODE_MIN_PAGES,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        score: ScoreKind = "maxsim",
        search_device: str | None = None,
        cache_holder: PageCacheHolder | None = None,
        search_processes: int | None = None,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be at least 1, not {similarity_top_k}")
        if candidate_depth < 1:
            raise ValueError(f"candidate_depth must be at least 1, not {candidate_depth}")
        if search_mode not in SEARCH_MODES:
            raise ValueError(f"search_mode must be one of {SEARCH_MODES}, not {search_mode!r}")
        if score not in SCORE_KINDS:
            raise ValueError(f"score must be one of {SCORE_KINDS}, not {score!r}")
        if search_processes is not None and (
            isinstance(search_processes, bool)
            or not isinstance(search_processes, int)
            or search_processes < 1
        ):
            raise ValueError(
                f"search_processes must be a whole number of at least 1 (or None), "
                f"not {search_processes!r}"
            )
        self.encoder = encoder
        self.store = store
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.search_mode = search_mode
        self.candidate_depth = candidate_depth
        self.fast_min_pages = fast_min_pages
        self.score = score
        self.search_device = search_device
        self._device = None if search_device is None else resolve_search_device(search_device)
        self.search_processes = search_processes
        self._cache: PageCache | None = None
        self._cache_holder = cache_holder
        self._cache_lock = threading.Lock()
        #: ``(table version, query dim, encoder fingerprint, page count)`` of the last check
        self._checked_version: tuple[int, int, Any, int] | None = None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def as_retriever(self, **settings: Any) -> ColPaliRetriever:
        """This retriever, or a copy with other settings (``similarity_top_k``, ``filters``...).

        LlamaIndex's ``CitationQueryEngine.from_args(index, ...)`` calls
        ``index.as_retriever()``; this lets a retriever stand where an index is expected.
        """
        unknown = set(settings) - set(RETRIEVER_SETTINGS)
        if unknown:
            raise TypeError(f"unknown retriever settings: {sorted(unknown)}")
        if not settings:
            return self
        current = {name: getattr(self, name) for name in RETRIEVER_SETTINGS}
        return ColPaliRetriever(
            self.encoder,
            self.store,
            **{**current, **settings},
            callback_manager=self.callback_manager,
            cache_holder=self._cache_holder,
        )

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by ``to_dict``/``from_dict``."""
        return "ColPaliRetriever"

    @property
    def resolved_search_mode(self) -> Literal["exact", "fast"]:
        """The visual mode the next query will use, resolving ``"auto"`` (and the visual half
        of ``"hybrid"``) by the store's size.
        """
        return self._search_mode_for(self.store.count())

    def _search_mode_for(self, n_pages: int) -> Literal["exact", "fast"]:
        visual = "auto" if self.search_mode == "hybrid" else self.search_mode
        if visual == "auto" and self._device is not None:
            return "exact"  # every page on the device: faster than the CPU's fast index
        return choose_search_mode(n_pages, visual, self.fast_min_pages)

    def _checked_store(self, version: int, dim: int) -> int:
        """The store's page count at ``version``, once its fingerprint is known to accept
        ``dim``-dimensional vectors from this encoder.

        Both can change only with the table's version, so they are read once per version (a
        LanceDB round trip each, on every query otherwise).
        """
        fingerprint = self.encoder.fingerprint
        checked = self._checked_version
        if checked is not None and checked[:3] == (version, dim, fingerprint):
            return checked[3]
        self.store.check_fingerprint(fingerprint, dim)
        n_pages = self.store.count()
        self._checked_version = (version, dim, fingerprint, n_pages)
        return n_pages

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query_vectors = self._query_vectors(query_bundle)
        version = self.store.version
        if version == 0:
            return []  # no table yet: nothing indexed
        n_pages = self._checked_store(version, query_vectors.shape[1])
        mode = self._search_mode_for(n_pages)
        allowed = None
        if self.filters is not None and self.filters.filters:
            allowed = set(self.store.page_ids(filters=self.filters, version=version))
            if not allowed:
                return []
        hybrid = self.search_mode == "hybrid" and not query_bundle.image_path
        depth = max(self.candidate_depth, self.similarity_top_k) if hybrid else None
        hits = self._visual_hits(
            query_vectors, depth or self.similarity_top_k, version, mode, allowed
        )
        if hybrid:
            text_hits = search_pages(
                self.store, query_bundle.query_str, depth, self.filters, version=version
            )
            ranking = hybrid_ranking(
                hits,
                text_hits,
                self.similarity_top_k,
                lambda page_ids: self._maxsim_of(query_vectors, page_ids, version),
            )
        else:
            ranking = visual_ranking(hits, len(query_vectors), self.score)
        return scored_nodes(ranking, lambda ids: self.store.get_nodes(ids, version=version))

    def _visual_hits(
        self,
        query_vectors: np.ndarray,
        k: int,
        version: int,
        mode: Literal["exact", "fast"],
        allowed: set[str] | None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best ``(page_id, MaxSim)`` at ``version``: a fast search in the worker
        processes where the retriever has them, else in this thread."""
        search = {"version": version, "allowed": allowed, "candidate_depth": self.candidate_depth}
        if mode == "fast" and self.search_processes is not None:
            workers = shared_search_processes(self.store, self.search_processes)
            try:
                return workers.search(query_vectors, k, **search)
            except SearchProcessesUnavailable:
                pass  # logged by the workers' pool; this process searches instead
        cache = self._refreshed_cache(version, mode)
        with search_slot():  # no more searches at once than cores (search_slots.py)
            return cache.search(query_vectors, k, **search)

    def _maxsim_of(self, query_vectors: np.ndarray, page_ids: list[str], version: int):
        """The exact MaxSim scores of ``page_ids`` at ``version`` (vectors read from the store)."""
        pages = PageVectorMatrix.from_pages(self.store.get_page_vectors(page_ids, version=version))
        return [float(score) for score in maxsim_scores(query_vectors, pages)[0]]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _query_vectors(self, query_bundle: QueryBundle) -> np.ndarray:
        if query_bundle.image_path:
            image = load_query_image(query_bundle.image_path)
            return self.encoder.embed_images([image], show_progress=False)[0]
        if not query_bundle.query_str or not query_bundle.query_str.strip():
            raise EmptyInputError("the query is empty; ask a question in words, or give an image")
        return self.encoder.embed_queries([query_bundle.query_str], show_progress=False)[0]

    def _refreshed_cache(self, version: int, mode: Literal["exact", "fast"]) -> PageCache:
        kind = _PAGE_CACHES[mode]
        device = self._device if mode == "exact" else None
        with self._cache_lock:
            cache = self._cache
            if (
                type(cache) is not kind
                or cache.store is not self.store
                or getattr(cache, "device", None) != device
            ):
                # A retriever holds its cache; one it no longer uses (the store outgrew exact
                # mode) is freed once no other retriever holds it either.
                cache = self._cache = shared_page_cache(self.store, kind, device)
        holder = self._cache_holder
        (store_cache_holder(self.store) if holder is None else holder).hold(cache)
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
            "score": self.score,
            "search_device": self.search_device,
            "search_processes": self.search_processes,
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
            score=data.get("score", "maxsim"),
            search_device=data.get("search_device"),
            search_processes=data.get("search_processes"),
        )
