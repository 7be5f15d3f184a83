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
from llama_index.core.chat_engine import CondenseQuestionChatEngine
from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.indices.managed.base import BaseManagedIndex
from llama_index.core.llms import LLM
from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine
from llama_index.core.query_engine.citation_query_engine import (
    CITATION_CHAT_CONTENT_QA_TEMPLATE,
    CITATION_CHAT_CONTENT_REFINE_TEMPLATE,
    CITATION_QA_TEMPLATE,
    CITATION_REFINE_TEMPLATE,
)
from llama_index.core.response_synthesizers import BaseSynthesizer, get_response_synthesizer
from llama_index.core.schema import BaseNode, Document

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.ingestion import IngestReport, ingest, ingest_documents
from llama_index_vlm.interpretability import hottest_region, similarity_maps
from llama_index_vlm.pages import page_image, page_label
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import RETRIEVER_SETTINGS, ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.vlm import HuggingFaceVLM


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
        encoder: ColPaliEncoder,
        store: LanceDBPageStore | None = None,
        batch_size: int = 16,
        show_progress: bool = False,
        pool_factor: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._encoder = encoder
        self._page_store = store if store is not None else LanceDBPageStore()
        self._batch_size = batch_size
        self._pool_factor = pool_factor
        #: The report of the last insertion (pages added, unchanged, failed files).
        self.last_report: IngestReport | None = None
        super().__init__(index_struct=IndexDict(), show_progress=show_progress, **kwargs)

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
        **kwargs: Any,
    ) -> VisualDocumentIndex:
        """Embed and store page documents (e.g. from :class:`PDFPageReader`) into an index.

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
        )
        index._insert(list(documents))
        return index

    @classmethod
    def from_store(cls, store: LanceDBPageStore, encoder: ColPaliEncoder, **kwargs: Any):
        """Open an index over pages already in ``store`` (its fingerprint is checked)."""
        store.check_fingerprint(encoder.fingerprint, encoder.embedding_dim)
        return cls(encoder=encoder, store=store, **kwargs)

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
        """A :class:`ColPaliRetriever` over this index (``similarity_top_k``, ``filters``...)."""
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
    ):
        """A query engine whose answers come from the retrieved page images.

        Args:
            llm: the answering model; defaults to ``Settings.llm`` (set it to a
                :class:`HuggingFaceVLM`).
            streaming: stream the answer (``response.response_gen``).
            citations: use LlamaIndex's ``CitationQueryEngine``: pages become numbered sources
                and the model is asked to cite them as ``[1]``, ``[2]``.
            **kwargs: retriever settings (``similarity_top_k``, ``filters``, ``search_mode``,
                ``candidate_depth``) and LlamaIndex query-engine arguments
                (``node_postprocessors``, ``response_mode``...).

        The response's ``source_nodes`` are the retrieved pages with their images, scores,
        ``file_name`` and ``page_number``.
        """
        llm = llm or Settings.llm
        retriever_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in RETRIEVER_SETTINGS}
        retriever = self.as_retriever(**retriever_kwargs)
        synthesizer = _page_synthesizer(
            llm,
            streaming=streaming,
            citations=citations,
            response_mode=kwargs.pop("response_mode", "compact"),
        )
        if citations:
            return CitationQueryEngine.from_args(
                None,
                retriever=retriever,
                llm=llm,
                response_synthesizer=synthesizer,
                multimodal=True,
                **kwargs,
            )
        return RetrieverQueryEngine.from_args(
            retriever, llm=llm, response_synthesizer=synthesizer, **kwargs
        )

    def as_chat_engine(self, llm: LLM | None = None, **kwargs: Any) -> CondenseQuestionChatEngine:
        """A chat engine: each follow-up is condensed into a standalone question, then answered
        from retrieved pages by :meth:`as_query_engine` (same keyword arguments).

        Condensing is a text-only call, which LLaVA families accept; with PaliGemma or BLIP-2
        (image-only prompts) pass a text LLM as ``condense_llm``.
        """
        llm = llm or Settings.llm
        condense_llm = kwargs.pop("condense_llm", llm)
        query_engine = self.as_query_engine(llm=llm, **kwargs)
        return CondenseQuestionChatEngine.from_defaults(query_engine=query_engine, llm=condense_llm)


def _page_synthesizer(
    llm: LLM, *, streaming: bool, citations: bool, response_mode: str
) -> BaseSynthesizer:
    """The multimodal response synthesizer that answers from page images."""
    synthesizer_kwargs: dict[str, Any] = {"llm": llm, "streaming": streaming}
    if isinstance(llm, HuggingFaceVLM):
        # LlamaIndex budgets every image at 2125 tokens whatever the model; packing by
        # page count lets LLaVA see all pages in one prompt (see chat_prompt_helper).
        synthesizer_kwargs["chat_prompt_helper"] = llm.chat_prompt_helper()
    if citations:
        # CitationQueryEngine.from_args drops a chat_prompt_helper given to it, so its
        # synthesizer is built here with the citation prompts it would use.
        synthesizer_kwargs.update(
            text_qa_template=CITATION_QA_TEMPLATE,
            refine_template=CITATION_REFINE_TEMPLATE,
            chat_content_qa_template=CITATION_CHAT_CONTENT_QA_TEMPLATE,
            chat_content_refine_template=CITATION_CHAT_CONTENT_REFINE_TEMPLATE,
        )
    return get_response_synthesizer(
        multimodal=True, response_mode=response_mode, **synthesizer_kwargs
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
