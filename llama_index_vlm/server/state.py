"""What a running server holds: the store, the models loaded once, the jobs and the queues.

Models load once, at start, in a background thread when a loader is given (``GET /health``
says ``loading`` meanwhile), and the retriever's page cache is warmed before the server says
``ready``. Every model call then goes through :mod:`~llama_index_vlm.server.gates`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_vlm.pages import doc_id_of, page_label
from llama_index_vlm.server.gates import GenerationQueue, SerialEncoder
from llama_index_vlm.server.jobs import IndexingJobs, UploadReader
from llama_index_vlm.server.schemas import (
    DeleteResponse,
    Document,
    GenerationStatus,
    Health,
    Info,
    Limits,
    PageHit,
)
from llama_index_vlm.server.uploads import UPLOAD_NAME_KEY, is_upload, remove_upload

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what clients may ask of the server.

    Args:
        max_upload_bytes: the largest upload request (all its files together).
        max_files: files per upload request.
        max_pages_per_file: pages of one uploaded file; a longer file is not indexed.
        generation_slots: answers generated at once (each holds the VLM's memory for one
            prompt); 1 suits one GPU or a CPU.
        max_waiting: askers waiting for a slot beyond which ``/ask`` answers 503.
        dpi: the resolution uploaded PDFs are rendered at.
    """

    max_upload_bytes: int = 64 * 1024 * 1024
    max_files: int = 16
    max_pages_per_file: int = 500
    generation_slots: int = 1
    max_waiting: int = 16
    dpi: int = 144


@dataclass(frozen=True)
class Models:
    """The models a server runs: a retriever and, for ``/ask``, an answering model."""

    encoder: Any
    vlm: Any | None = None


class NotReadyError(Exception):
    """The models are still loading (or failed to load); the request cannot be served yet."""


class UnknownItemError(LookupError):
    """A page, document or job id that does not exist (HTTP 404)."""


class NoAnsweringModelError(Exception):
    """``/ask`` on a server started without a VLM (HTTP 501)."""


@dataclass
class DocumentRecord:
    """One stored document, with the files its pages came from."""

    doc_id: str
    file_name: str | None
    pages: int
    file_path: str | None


class ServerState:
    """The store, models, jobs and generation queue of one server.

    Args:
        store: the :class:`~llama_index_vlm.store.LanceDBPageStore` served.
        load_models: returns the :class:`Models`; run once, in a background thread by
            :meth:`start_loading` (or at once by :meth:`load`).
        limits: see :class:`ServerLimits`.
        upload_dir: where uploads are saved (created when needed).
        auth: whether a token protects the server (reported by ``/info``).
        search_device: where the retrievers keep and search the pages (``ColPaliRetriever``'s
            ``search_device``; checked here); None: the CPU.
        search_processes: worker processes for the retrievers' fast searches
            (``ColPaliRetriever``'s ``search_processes``); None: in this process.
    """

    def __init__(
        self,
        store: Any,
        load_models: Callable[[], Models],
        limits: ServerLimits,
        upload_dir: str | os.PathLike[str],
        auth: bool = False,
        search_device: str | None = None,
        search_processes: int | None = None,
    ):
        if search_device is not None:
            from llama_index_vlm.search import resolve_search_device

            resolve_search_device(search_device)
        self.store = store
        self.search_device = search_device
        self.search_processes = search_processes
        self.limits = limits
        self.upload_dir = Path(os.path.abspath(upload_dir))
        self.auth = auth
        self.generation = GenerationQueue(limits.generation_slots, limits.max_waiting)
        self.status = "loading"
        self.error: str | None = None
        self.load_error: BaseException | None = None
        self.encoder: SerialEncoder | None = None
        self.vlm: Any | None = None
        self.index: Any | None = None
        self.jobs: IndexingJobs | None = None
        self._load_models = load_models
        self._ready = threading.Event()
        self._upload_names: dict[str, str | None] = {}  # doc_id -> name; see _upload_name

    # ------------------------------------------------------------------ loading

    def start_loading(self) -> threading.Thread:
        """Load the models in a daemon thread; ``status`` turns ``ready`` or ``failed``."""
        thread = threading.Thread(target=self.load, name="llama-index-vlm-load", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        """Load the models, open the index and warm the page cache (errors are recorded)."""
        from llama_index_vlm.index import VisualDocumentIndex

        try:
            models = self._load_models()
            encoder = SerialEncoder(models.encoder)
            self.index = VisualDocumentIndex.from_store(self.store, encoder)
            self.encoder, self.vlm = encoder, models.vlm
            self.jobs = IndexingJobs(
                encoder,
                self.store,
                self.upload_dir,
                UploadReader(dpi=self.limits.dpi),
                self.limits.max_pages_per_file,
                on_done=self.warm_cache,
            )
            self.warm_cache()
            self.status = "ready"
        except Exception as error:  # noqa: BLE001 - reported by /health and by `serve`
            logger.error("the server's models could not be loaded: %s", error)
            self.error = str(error)
            self.status = "failed"
            self.load_error = error
        finally:
            self._ready.set()

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading ended (ready or failed); False on timeout."""
        return self._ready.wait(timeout)

    def require_ready(self) -> None:
        """Raise :class:`NotReadyError` unless the models are loaded."""
        if self.status != "ready":
            raise NotReadyError(
                "the server failed to load its models: " + (self.error or "")
                if self.status == "failed"
                else "the server is loading its models; GET /health says when it is ready"
            )

    def warm_cache(self) -> None:
        """Load the store's pages into the retriever's cache (after start and each upload)."""
        self._upload_names.clear()  # an upload of the same bytes under a new name renames it
        if self.encoder is None or self.store.count() == 0:
            return
        self.search("warm up", 1, None)

    def health(self) -> Health:
        return Health(status=self.status, error=self.error)

    def shutdown(self) -> None:
        if self.jobs is not None:
            self.jobs.shutdown()

    # ------------------------------------------------------------------ search and answers

    def search(self, query: str, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        """The best ``k`` pages for ``query``; blocking (run it in a worker thread)."""
        retriever = self.index.as_retriever(
            similarity_top_k=k,
            filters=filters,
            search_device=self.search_device,
            search_processes=self.search_processes,
        )
        return retriever.retrieve(query)  # the index keeps the page cache loaded

    def query_engine(self, k: int, filters: MetadataFilters | None) -> Any:
        """A streaming query engine over ``k`` pages, answered by the VLM."""
        if self.vlm is None:
            raise NoAnsweringModelError(
                "this server has no answering model; restart it with --vlm CKPT to use /ask, "
                "or use /search"
            )
        return self.index.as_query_engine(
            llm=self.vlm,
            similarity_top_k=k,
            filters=filters,
            streaming=True,
            search_device=self.search_device,
            search_processes=self.search_processes,
        )

    def answer(self, engine: Any, question: str) -> Any:
        """``engine.query(question)``: the pages retrieved and the answer's token stream, not
        started yet; blocking (run it in a worker thread)."""
        return engine.query(question)

    def count_pages(self, filters: MetadataFilters | None) -> int:
        """Pages (matching ``filters``); checks the filters against the store."""
        return self.store.count(filters)

    # ------------------------------------------------------------------ pages and documents

    def page(self, page_id: str) -> BaseNode:
        """The stored page ``page_id`` (with its image), or :class:`UnknownItemError`."""
        nodes = self.store.get_nodes([page_id])
        if not nodes:
            raise UnknownItemError(f"no page {page_id!r}; page ids come from /search or /ask")
        return nodes[0]

    def documents(self) -> list[DocumentRecord]:
        """Every stored document with its page count, by name (an upload's: the name given)."""
        records = []
        for stored in self.store.documents():
            name = stored.file_name
            if stored.file_path and is_upload(stored.file_path, self.upload_dir):
                name = self._upload_name(stored.doc_id) or name
            records.append(DocumentRecord(stored.doc_id, name, stored.pages, stored.file_path))
        return sorted(records, key=lambda record: (record.file_name or "", record.doc_id))

    def _upload_name(self, doc_id: str) -> str | None:
        """The name an uploaded document was given, read from its first page's metadata once."""
        if doc_id not in self._upload_names:
            first_page = MetadataFilters(
                filters=[
                    MetadataFilter(key="doc_id", value=doc_id),
                    MetadataFilter(key="page_number", value=1),
                ]
            )
            nodes = self.store.get_nodes(filters=first_page)
            name = nodes[0].metadata.get(UPLOAD_NAME_KEY) if nodes else None
            self._upload_names[doc_id] = name if isinstance(name, str) else None
        return self._upload_names[doc_id]

    def delete_document(self, doc_id: str) -> DeleteResponse:
        """Delete a document's pages, and its uploaded files."""
        record = next((doc for doc in self.documents() if doc.doc_id == doc_id), None)
        if record is None:
            raise UnknownItemError(f"no document {doc_id!r}; GET /documents lists them")
        self.store.delete(doc_id)
        if record.file_path:
            remove_upload(record.file_path, self.upload_dir)
        self.warm_cache()
        return DeleteResponse(
            doc_id=doc_id, pages_deleted=record.pages, pages_left=self.store.count()
        )

    def info(self) -> Info:
        fingerprint = self.store.fingerprint or {}
        vlm_name = None if self.vlm is None else self.vlm.name_or_path
        queue = self.generation
        return Info(
            store=str(self.store.uri),
            pages=self.store.count(),
            documents=len(self.store.doc_ids()),
            retriever=fingerprint.get("model"),
            vlm=vlm_name,
            version=self.store.version,
            auth=self.auth,
            limits=Limits(
                max_upload_bytes=self.limits.max_upload_bytes,
                max_files=self.limits.max_files,
                max_pages_per_file=self.limits.max_pages_per_file,
            ),
            generation=None
            if self.vlm is None
            else GenerationStatus(
                slots=queue.slots,
                active=queue.active,
                waiting=queue.waiting,
                max_waiting=queue.max_waiting,
            ),
        )


def metadata_filters(filters: dict[str, Any] | None) -> MetadataFilters | None:
    """``{"key": value}`` pairs as LlamaIndex ``MetadataFilters`` (all must be equal)."""
    if not filters:
        return None
    return MetadataFilters(
        filters=[MetadataFilter(key=key, value=value) for key, value in filters.items()]
    )


def page_hit(hit: NodeWithScore | BaseNode) -> PageHit:
    """A page as the API returns it: ids, the name people know it by, number and score."""
    node = getattr(hit, "node", hit)
    metadata = node.metadata
    uploaded_as = metadata.get(UPLOAD_NAME_KEY)
    if uploaded_as:
        label = f"{uploaded_as}, page {metadata.get('page_number', '?')}"
    else:
        label = page_label(node)
    return PageHit(
        page_id=node.node_id,
        doc_id=doc_id_of(node),
        file_name=uploaded_as or metadata.get("file_name"),
        page_number=metadata.get("page_number"),
        page_count=metadata.get("page_count"),
        score=getattr(hit, "score", None),
        label=label,
    )


def document_model(record: DocumentRecord) -> Document:
    return Document(doc_id=record.doc_id, file_name=record.file_name, pages=record.pages)
