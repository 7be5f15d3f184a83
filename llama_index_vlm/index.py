"""VisualDocumentIndex: the LlamaIndex facade over encoder, page store, retriever and VLM.

It is a LlamaIndex managed index (``BaseManagedIndex``, as the integrations whose storage lives
outside LlamaIndex's docstore are): pages live in the :class:`LanceDBPageStore`, and the usual
verbs (``from_documents``, ``insert``, ``delete_ref_doc``, ``as_retriever``,
``as_query_engine``, ``as_chat_engine``) work as they do for a ``VectorStoreIndex``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core import Settings
from llama_index.core.chat_engine.types import BaseChatEngine, ChatMode
from llama_index.core.indices.managed.base import BaseManagedIndex
from llama_index.core.llms import LLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import BaseNode, Document
from llama_index.core.storage.storage_context import StorageContext
from llama_index.core.vector_stores.types import BasePydanticVectorStore

from llama_index_vlm.chat_engines import page_chat_engine
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.ingestion import IngestReport, ingest, ingest_documents
from llama_index_vlm.interpretability import hottest_region, similarity_maps
from llama_index_vlm.pages import page_image, page_label
from llama_index_vlm.query_engines import page_query_engine
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import RETRIEVER_SETTINGS, ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.index_struct import PageIndexStruct


class VisualDocumentIndex(BaseManagedIndex):
    """An index of document pages as images, answered by a vision-language model.

    Args:
        encoder: the ColPali-family encoder of pages and queries.
        store: the page store (default: ``LanceDBPageStore()`` at ``./vlm_index``).
        batch_size: pages per commit when inserting.
        pool_factor: shrink stored page vectors by Ward token pooling (see :func:`ingest`);
            default: the store's own, 1 (no pooling) for a new store.
        show_progress: progress bars while inserting.

    Example::

        index = VisualDocumentIndex.from_documents(docs, encoder=encoder, store=store)
        engine = index.as_query_engine(llm=vlm, similarity_top_k=3, streaming=True)
        engine.query("What was the 2023 revenue?").print_response_stream()
    """

    def __init__(
        self,
        encoder: ColPaliEncoder | None = None,
        store: LanceDBPageStore | None = None,
        batch_size: int = 16,
        show_progress: bool = False,
        pool_factor: float | None = None,
        storage_context: StorageContext | None = None,
        index_struct: PageIndexStruct | None = None,
        **kwargs: Any,
    ) -> None:
        self._page_store = _page_store(store, storage_context, index_struct)
        self._encoder = _encoder(encoder, index_struct)
        self._batch_size = batch_size
        self._pool_factor = pool_factor
        #: The report of the last insertion (pages added, unchanged, failed files).
        self.last_report: IngestReport | None = None
        if storage_context is None:
            storage_context = StorageContext.from_defaults(vector_store=self._page_store)
        else:
            storage_context.vector_stores["default"] = self._page_store
        super().__init__(
            index_struct=_index_struct(self._page_store, self._encoder, index_struct),
            storage_context=storage_context,
            show_progress=show_progress,
            **kwargs,
        )

    @property
    def encoder(self) -> ColPaliEncoder:
        """The page and query encoder."""
        return self._encoder

    @property
    def store(self) -> LanceDBPageStore:
        """The page store."""
        return self._page_store

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        encoder: ColPaliEncoder | None = None,
        store: LanceDBPageStore | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
        pool_factor: float | None = None,
        storage_context: StorageContext | None = None,
        **kwargs: Any,
    ) -> VisualDocumentIndex:
        """Embed and store page documents (e.g. from :class:`PDFPageReader`) into an index.

        The pages go to ``store``, or to the ``LanceDBPageStore`` of ``storage_context``
        (``StorageContext.from_defaults(vector_store=store)``, the LlamaIndex idiom).
        Pages already stored unchanged are skipped, so building the same index twice writes
        nothing the second time. See :attr:`last_report` for what was written.
        """
        if encoder is None:
            raise TypeError("VisualDocumentIndex.from_documents needs encoder=ColPaliEncoder(...)")
        index = cls(
            encoder=encoder,
            store=store,
            batch_size=batch_size,
            show_progress=show_progress,
            pool_factor=pool_factor,
            storage_context=storage_context,
            **kwargs,
        )
        index._insert(list(documents))
        return index

    @classmethod
    def from_vector_store(
        cls, vector_store: LanceDBPageStore, encoder: ColPaliEncoder, **kwargs: Any
    ) -> VisualDocumentIndex:
        """Open an index over the pages already in ``vector_store`` (the LlamaIndex idiom of
        ``VectorStoreIndex.from_vector_store``; the store's fingerprint is checked).

        Raises:
            ModelMismatchError: the stored vectors come from another encoder.
            InvalidRequestError: ``vector_store`` is not a :class:`LanceDBPageStore`.
        """
        if not isinstance(vector_store, LanceDBPageStore):
            raise InvalidRequestError(_not_a_page_store(vector_store))
        vector_store.check_fingerprint(encoder.fingerprint, encoder.embedding_dim)
        return cls(encoder=encoder, store=vector_store, **kwargs)

    @classmethod
    def from_store(
        cls, store: LanceDBPageStore, encoder: ColPaliEncoder, **kwargs: Any
    ) -> VisualDocumentIndex:
        """Same as :meth:`from_vector_store`."""
        return cls.from_vector_store(store, encoder, **kwargs)

    def ingest(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        reader: PDFPageReader | None = None,
    ) -> IngestReport:
        """Read, embed and store the PDFs and images under ``paths`` (see :func:`ingest`)."""
        self.last_report = ingest(
            paths,
            self._encoder,
            self._page_store,
            reader=reader,
            batch_size=self._batch_size,
            pool_factor=self._pool_factor,
            show_progress=self._show_progress,
        )
        return self.last_report

    def _insert(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        self.last_report = ingest_documents(
            nodes,
            self._encoder,
            self._page_store,
            batch_size=self._batch_size,
            pool_factor=self._pool_factor,
            show_progress=self._show_progress,
        )

    def insert(self, document: Document, **insert_kwargs: Any) -> None:
        """Embed and store one page document (no text splitting: a page is the unit)."""
        self._insert([document])

    def insert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        """Embed and store page nodes."""
        self._insert(nodes)

    def delete_ref_doc(
        self, ref_doc_id: str, delete_from_docstore: bool = False, **delete_kwargs: Any
    ) -> None:
        """Delete every page of the document ``ref_doc_id`` (its ``doc_id``)."""
        self._page_store.delete(ref_doc_id)

    def update_ref_doc(self, document: Document, **update_kwargs: Any) -> None:
        """Store a new version of a page document; its page is replaced if it changed."""
        self._insert([document])

    def as_retriever(self, **kwargs: Any) -> ColPaliRetriever:
        """A :class:`ColPaliRetriever` over this index (``similarity_top_k``, ``filters``...).

        The retrievers made here share the store's page cache, and the store keeps the one
        they used last loaded: a retriever made per request finds the pages in memory.
        """
        return ColPaliRetriever(
            encoder=self._encoder,
            store=self._page_store,
            callback_manager=self._callback_manager,
            **kwargs,
        )

    def as_query_engine(
        self,
        llm: LLM | None = None,
        streaming: bool = False,
        citations: bool = False,
        **kwargs: Any,
    ) -> RetrieverQueryEngine:
        """A query engine whose answers come from the retrieved page images.

        Args:
            llm: the answering model; defaults to ``Settings.llm`` (set it to a
                :class:`HuggingFaceVLM`).
            streaming: stream the answer (``response.response_gen``).
            citations: use LlamaIndex's ``CitationQueryEngine``: pages become numbered sources
                and the model is asked to cite them as ``[1]``, ``[2]``.
            **kwargs: retriever settings (``similarity_top_k``, ``filters``, ``search_mode``,
                ``score``, ...) and every argument of ``RetrieverQueryEngine.from_args``:
                ``text_qa_template``, ``refine_template``, ``summary_template`` (text templates
                get the pages, text and images, where their ``{context_str}`` stands),
                ``response_mode``, ``output_cls`` (a structured answer: ``response.response``
                is an ``output_cls`` instance), ``node_postprocessors``, ``use_async``,
                ``verbose``... (see :func:`~llama_index_vlm.query_engines.page_query_engine`).

        The response's ``source_nodes`` are the retrieved pages with their images, scores,
        ``file_name`` and ``page_number``.

        Raises:
            TypeError: an argument no query engine takes.
            InvalidRequestError: an argument that would answer without the page images
                (``multimodal=False``, ``response_mode="generation"``...).
        """
        llm = llm or Settings.llm
        retriever_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in RETRIEVER_SETTINGS}
        return page_query_engine(
            self.as_retriever(**retriever_kwargs),
            llm,
            streaming=streaming,
            citations=citations,
            **kwargs,
        )

    def as_chat_engine(
        self,
        chat_mode: ChatMode | str = ChatMode.BEST,
        llm: LLM | None = None,
        **kwargs: Any,
    ) -> BaseChatEngine:
        """A chat engine that sends the pages retrieved for each message to the model.

        Args:
            chat_mode: ``"condense_plus_context"`` (the default, as ``"best"``): each follow-up
                is condensed into a standalone question, the pages retrieved for it are sent
                as images; ``"context"``: the pages retrieved for each message are sent;
                ``"condense_question"``: the condensed question goes to
                :meth:`as_query_engine`. ``"simple"``, ``"react"`` and ``"openai"`` raise
                :class:`~llama_index_vlm.errors.InvalidRequestError` (they send no page).
                See :mod:`~llama_index_vlm.chat_engines`.
            llm: the answering model; defaults to ``Settings.llm``.
            **kwargs: retriever settings, the chosen LlamaIndex engine's ``from_defaults``
                arguments (``system_prompt``, ``memory``, ``chat_history``...), and
                ``condense_llm``: a text-capable LLM for the condensing step (PaliGemma and
                BLIP-2 answer only questions about an image).
        """
        return page_chat_engine(self, chat_mode, llm or Settings.llm, kwargs)


def _page_store(
    store: LanceDBPageStore | None,
    storage_context: StorageContext | None,
    index_struct: PageIndexStruct | None,
) -> LanceDBPageStore:
    """The page store of an index: ``store``, else the storage context's, else the one an
    index struct records (loading), else ``LanceDBPageStore()``.
    """
    # A context loaded from a persist_dir without vector_store= may hold no default store.
    context_store = (
        None if storage_context is None else storage_context.vector_stores.get("default")
    )
    if isinstance(context_store, LanceDBPageStore):
        if store is not None and store is not context_store:
            raise InvalidRequestError(
                "store= and storage_context= name two different page stores; pass one"
            )
        return context_store
    if store is not None:
        return store
    if index_struct is not None and index_struct.store:
        return LanceDBPageStore.from_dict(index_struct.store)
    if storage_context is not None:
        raise InvalidRequestError(_not_a_page_store(context_store))
    return LanceDBPageStore()


def _encoder(encoder: ColPaliEncoder | None, index_struct: PageIndexStruct | None):
    """``encoder``, else the one a loaded index struct records, loaded from its checkpoint."""
    if encoder is not None:
        return encoder
    if index_struct is not None and index_struct.encoder.get("name_or_path"):
        recorded = index_struct.encoder
        return ColPaliEncoder.from_pretrained(
            recorded["name_or_path"], revision=recorded.get("revision")
        )
    raise TypeError("VisualDocumentIndex needs encoder=ColPaliEncoder.from_pretrained(...)")


def _index_struct(
    store: LanceDBPageStore, encoder: ColPaliEncoder, loaded: PageIndexStruct | None
) -> PageIndexStruct:
    """The index's entry for LlamaIndex's index store: where its pages are, which encoder.

    Object-store credentials (``storage_options``) are never recorded: a persisted storage
    context is a plain JSON file. Pass the store again to load an index that needs them.
    """
    struct = PageIndexStruct(
        store={k: v for k, v in store.to_dict().items() if k != "storage_options"},
        encoder={"name_or_path": encoder.name_or_path, "revision": encoder.revision},
    )
    if loaded is not None:
        struct.index_id = loaded.index_id
    return struct


def _not_a_page_store(vector_store: BasePydanticVectorStore | None) -> str:
    return (
        f"a VisualDocumentIndex keeps its pages in a LanceDBPageStore, not a "
        f"{type(vector_store).__name__}; pass StorageContext.from_defaults(vector_store="
        "LanceDBPageStore(uri=...)), or use VisualDocumentIndex.from_vector_store(store, "
        "encoder=...)"
    )


def cited_pages(response: Any) -> list[str]:
    """The pages behind a response, best first, as ``"report.pdf, page 3 (score 12.31)"``."""
    cited = []
    for hit in response.source_nodes:
        label = page_label(hit.node)
        cited.append(f"{label} (score {hit.score:.2f})" if hit.score is not None else label)
    return cited


#: Metadata key under which :func:`highlight_sources` stores a page's best-matching region.
ANSWER_REGION_KEY = "answer_region"


def highlight_sources(
    response: Any, encoder: ColPaliEncoder, query: str, quantile: float = 0.9
) -> list[tuple[int, int, int, int]]:
    """Find where on each cited page the query matched, and keep it on the source node.

    For every source node of ``response`` (or a list of ``NodeWithScore``), the page's patch
    grid is embedded again and scored against the query's tokens; the summed per-token
    similarity map's hottest patches give a box ``(left, top, right, bottom)`` in page pixels.
    It is stored as ``node.metadata["answer_region"]`` (hidden from the LLM) and returned.
    Draw it with :func:`llama_index_vlm.interpretability.draw_region`.

    Example::

        response = engine.query(question)
        for hit, box in zip(response.source_nodes, highlight_sources(response, encoder, question)):
            draw_region(decode_image(hit.node.image), box).save(f"{hit.node.node_id}.png")
    """
    hits = getattr(response, "source_nodes", response)
    (query_vectors,) = encoder.embed_queries([query], show_progress=False)
    regions = []
    for hit in hits:
        node = getattr(hit, "node", hit)
        region = _hottest_region(node, query_vectors, encoder, quantile)
        _keep_region(node, region)
        regions.append(region)
    return regions


def _hottest_region(
    node: BaseNode, query_vectors: Any, encoder: ColPaliEncoder, quantile: float
) -> tuple[int, int, int, int]:
    """The box of ``node``'s page where the query's summed similarity map is hottest."""
    page = page_image(node)
    maps = similarity_maps(query_vectors, encoder.embed_image_patches(page))
    return hottest_region(maps.sum(axis=0), page.size, quantile=quantile)


def _keep_region(node: BaseNode, region: tuple[int, int, int, int]) -> None:
    """Store ``region`` on the node under :data:`ANSWER_REGION_KEY`, hidden from models."""
    node.metadata[ANSWER_REGION_KEY] = list(region)
    if ANSWER_REGION_KEY not in node.excluded_llm_metadata_keys:
        node.excluded_llm_metadata_keys.append(ANSWER_REGION_KEY)
        node.excluded_embed_metadata_keys.append(ANSWER_REGION_KEY)
