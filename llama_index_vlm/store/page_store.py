"""The LanceDB page store: a LlamaIndex vector store whose rows are document pages.

See :mod:`llama_index_vlm.store` for the table layout and the atomicity of writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.fingerprint import pool_factor_of
from llama_index_vlm.store import carried, queries
from llama_index_vlm.store.compaction import CompactingStore
from llama_index_vlm.store.filters import page_where, quote_literal
from llama_index_vlm.store.object_storage import reports_storage_errors, storage_errors
from llama_index_vlm.store.results import AddResult, StoredDocument, stored_documents
from llama_index_vlm.store.rows import (
    PreparedPage,
    classify,
    deduplicate,
    prepare_pages,
    row_to_node,
)
from llama_index_vlm.store.schema import (
    NODE_COLUMNS,
    VECTOR_COLUMN,
    VectorDType,
    schema_dim,
    schema_dtype,
    schema_fingerprint,
)
from llama_index_vlm.store.table import PageTable


class LanceDBPageStore(BasePydanticVectorStore, CompactingStore):
    """LlamaIndex vector store of document pages (image + ColPali multi-vector) in LanceDB.

    Opening a store never overwrites anything: an existing table is reopened as it is, and a
    new one is created on the first :meth:`add` (when the vectors' dimension is known).

    Args:
        uri: a local directory or any URI LanceDB accepts (``s3://``, ``gs://``, ``az://``).
        table_name: the table inside ``uri``; one table holds one encoder's vectors.
        vector_dtype: how new tables store vectors; float16 halves disk and memory for a
            relative rounding error of at most 2**-11 per component.
        storage_options: object-store options passed to LanceDB (credentials, region, ...).
        read_consistency_interval: seconds between checks for versions committed by other
            processes; 0 (the default) always reads the latest, None never checks.
        auto_compact: compact after large deletes and ingests (:meth:`compact_if_needed`);
            :meth:`compact` gives the space of deleted pages back on demand.

    Example:
        >>> store = LanceDBPageStore(uri="./vlm_index")                   # doctest: +SKIP
        >>> result = store.upsert_pages(pages, page_vectors, fingerprint=fp)  # doctest: +SKIP
        >>> result.added, result.unchanged                                 # doctest: +SKIP
    """

    stores_text: bool = True
    flat_metadata: bool = False

    uri: str = Field(
        default="./vlm_index",
        description="Local directory or LanceDB URI (s3://, gs://, az://) of the database.",
    )
    table_name: str = Field(default="pages", description="Name of the page table.")
    vector_dtype: VectorDType = Field(
        default="float16", description="Storage type of the vectors when a table is created."
    )
    storage_options: dict[str, str] | None = Field(
        default=None, description="Object-store options for LanceDB (credentials, region...)."
    )
    read_consistency_interval: float | None = Field(
        default=0.0,
        description="Seconds between checks for other processes' commits; 0 always reads the "
        "latest version, None never checks.",
    )
    auto_compact: bool = Field(default=True, description="Compact after large deletes/ingests.")

    _connection: Any = PrivateAttr(default=None)
    _pages: PageTable = PrivateAttr(default=None)
    #: The page cache its retrievers used last, kept loaded while this store object lives
    #: (``llama_index_vlm.retriever.page_caches.store_cache_holder``).
    _page_cache_holder: Any = PrivateAttr(default=None)

    def __init__(
        self,
        uri: str = "./vlm_index",
        table_name: str = "pages",
        vector_dtype: VectorDType = "float16",
        storage_options: dict[str, str] | None = None,
        read_consistency_interval: float | None = 0.0,
        *,
        connection: Any | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            uri=str(uri),
            table_name=table_name,
            vector_dtype=vector_dtype,
            storage_options=storage_options,
            read_consistency_interval=read_consistency_interval,
            **kwargs,
        )
        if connection is None:
            interval = (
                None
                if read_consistency_interval is None
                else timedelta(seconds=read_consistency_interval)
            )
            with storage_errors(self.uri):
                connection = lancedb.connect(
                    self.uri, read_consistency_interval=interval, storage_options=storage_options
                )
        self._connection = connection
        self._pages = PageTable(connection, table_name, self.uri, vector_dtype)
        self._pages.after_delete = self.compact_if_needed
        self._pages.open()

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by ``to_dict``/``from_dict``."""
        return "LanceDBPageStore"

    @property
    def client(self) -> Any:
        """The LanceDB connection."""
        return self._connection

    # ------------------------------------------------------------------ table and fingerprint

    @property
    @reports_storage_errors
    def schema(self) -> pa.Schema | None:
        """The table's Arrow schema (:func:`~llama_index_vlm.store.page_schema`); None before
        the first page is added.
        """
        table = self._pages.open()
        return None if table is None else table.schema

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint of the encoder that made the stored vectors (None if none yet)."""
        schema = self.schema
        return None if schema is None else schema_fingerprint(schema)

    @property
    def pool_factor(self) -> float:
        """The token pool factor the stored page vectors were shrunk by at ingest (1: none).

        Recorded in the fingerprint by :func:`~llama_index_vlm.ingestion.ingest`; 1 for a new
        store and for pages stored without pooling.
        """
        return pool_factor_of(self.fingerprint)

    @property
    def dim(self) -> int | None:
        """The vectors' dimension (None before the first page is added)."""
        schema = self.schema
        return None if schema is None else schema_dim(schema)

    @property
    @reports_storage_errors
    def version(self) -> int:
        """The table's current version; it changes whenever pages are written or deleted.

        A retriever caching vectors in memory compares it with the version it loaded to know
        when to refresh. 0 before the table exists.
        """
        return self._pages.version()

    def check_fingerprint(self, fingerprint: dict[str, Any] | None, dim: int | None = None) -> None:
        """Raise :class:`ModelMismatchError` if vectors from ``fingerprint`` (or of ``dim``
        dimensions) cannot go into this store. Call it before encoding to fail early.

        The rules are :func:`~llama_index_vlm.fingerprint.check_compatible`'s.
        """
        self._pages.check(fingerprint, dim)

    @reports_storage_errors
    def refresh(self) -> None:
        """See other processes' commits now (only needed with ``read_consistency_interval``)."""
        table = self._pages.open()
        if table is not None:
            table.checkout_latest()

    # ------------------------------------------------------------------ writing

    def add(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None = None,
        fingerprint: dict[str, Any] | None = None,
        **add_kwargs: Any,
    ) -> list[str]:
        """Store pages with their multi-vectors in one atomic commit; return their ids.

        Same as :meth:`upsert_pages`, returning only the page ids, as LlamaIndex expects;
        nodes may carry their vectors instead (:mod:`~llama_index_vlm.store.carried`).
        """
        nodes, page_vectors, fingerprint = carried.given_or_carried(
            nodes, page_vectors, fingerprint
        )
        return self.upsert_pages(nodes, page_vectors, fingerprint=fingerprint).page_ids

    async def async_add(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None = None,
        fingerprint: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """:meth:`add` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.add, nodes, page_vectors, fingerprint, **kwargs)

    @reports_storage_errors
    def upsert_pages(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None,
        fingerprint: dict[str, Any] | None = None,
    ) -> AddResult:
        """Insert new pages, replace changed ones and skip unchanged ones, in ONE commit.

        Args:
            nodes: page nodes (``ImageDocument``/``ImageNode``) with the image embedded as
                base64 (or an ``image_path``) and the reader's page metadata.
            page_vectors: one float array ``(n_vectors_i, dim)`` per node, in order.
            fingerprint: the encoder's fingerprint; stored with a new table and compared with
                the stored one.

        Pages are matched by ``page_id`` (the node id). In the same commit, pages of an older
        version of a file in the batch (same ``file_path``, different ``doc_id``) and pages of
        a document beyond its new ``page_count`` are deleted. Nothing is written when every
        page is unchanged, so the table version stays the same.

        Raises:
            ModelMismatchError: the vectors come from another encoder, or have another
                dimension, than the stored ones. Nothing is written.
            InvalidPageError: a node without an image, vectors of the wrong shape or not
                finite, or inconsistent page metadata (a ``ValueError``). Nothing is written.
            StoreError: LanceDB could not write (disk full, permission denied...). Nothing
                is written; retry once the cause is fixed.
        """
        pages = self._prepare(nodes, page_vectors)
        if not pages:
            return AddResult(version=self.version)
        unique = deduplicate(pages)
        with self._pages.writing():
            self._pages.for_write(int(unique[0].vectors.shape[1]), fingerprint)
            stored = self.page_hashes(page_ids=[page.page_id for page in unique])
            result, to_write = classify(unique, stored, [page.page_id for page in pages])
            result.removed, result.version = self._pages.commit(unique, to_write, fingerprint)
            return result

    async def aupsert_pages(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None,
        fingerprint: dict[str, Any] | None = None,
    ) -> AddResult:
        """:meth:`upsert_pages` in a worker thread."""
        return await asyncio.to_thread(self.upsert_pages, nodes, page_vectors, fingerprint)

    def _prepare(
        self, nodes: Sequence[BaseNode], page_vectors: Sequence[np.ndarray] | np.ndarray | None
    ) -> list[PreparedPage]:
        schema = self.schema
        dtype = self.vector_dtype if schema is None else schema_dtype(schema)
        return prepare_pages(nodes, page_vectors, np.dtype(dtype))

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every page of the document ``ref_doc_id`` (one commit; none if no page)."""
        self._pages.delete_where(f"doc_id = {quote_literal(ref_doc_id)}")

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """:meth:`delete` in a worker thread."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the pages with these ids and/or matching ``filters`` (both must hold).

        Giving neither raises :class:`~llama_index_vlm.errors.InvalidRequestError` (a
        ``ValueError``): use :meth:`clear` to delete everything.
        """
        if node_ids is None and filters is None:
            raise InvalidRequestError(
                "delete_nodes needs node_ids or filters; use clear() to delete all"
            )
        if node_ids is not None and not node_ids:
            return
        self._pages.delete_where(page_where(filters, node_ids=node_ids) or "TRUE")

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """:meth:`delete_nodes` in a worker thread."""
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        """Delete every page (one commit). The table, its fingerprint and history remain;
        to index with another encoder, use another ``table_name``.
        """
        self._pages.delete_where("TRUE")

    async def aclear(self) -> None:
        """:meth:`clear` in a worker thread."""
        await asyncio.to_thread(self.clear)

    # ------------------------------------------------------------------ reading

    @reports_storage_errors
    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        *,
        version: int | None = None,
    ) -> list[BaseNode]:
        """Return the pages with these ids and/or matching ``filters`` as ``ImageNode``s.

        With ``node_ids``, nodes come in that order (missing ids are left out); with neither
        argument, every page. Each node carries the stored image (base64, with its mimetype),
        the text, the page fields and user metadata, and ``ref_doc_id`` = ``doc_id``.

        ``version`` reads the pages as they were at that table version (e.g. the version a
        search scored), not the current one; it also spares the read of the current version.
        """
        table = self._pages.snapshot(version)
        if table is None or (node_ids is not None and not node_ids):
            return []
        if node_ids is not None and not (filters and filters.filters):
            rows = self._pages.read_pages(node_ids, NODE_COLUMNS, version=version).to_pylist()
        else:
            rows = queries.select_pages(table, NODE_COLUMNS, filters, page_ids=node_ids)
            rows = rows.to_pylist()
        nodes = [row_to_node(row) for row in rows]
        if node_ids is not None:
            by_id = {node.node_id: node for node in nodes}
            nodes = [by_id[page_id] for page_id in dict.fromkeys(node_ids) if page_id in by_id]
        return nodes

    async def aget_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        *,
        version: int | None = None,
    ) -> list[BaseNode]:
        """:meth:`get_nodes` in a worker thread."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, version=version)

    @reports_storage_errors
    def count(self, filters: MetadataFilters | None = None) -> int:
        """Number of pages (matching ``filters``).

        The store deliberately has no ``__len__``: an empty store would then be falsy, and
        ``store or default`` idioms would silently replace it.
        """
        table = self._pages.open()
        if table is None:
            return 0
        return int(table.count_rows(page_where(filters)))

    def doc_ids(self) -> list[str]:
        """The ids of the stored documents, sorted."""
        return sorted(document.doc_id for document in self.documents())

    @reports_storage_errors
    def documents(self) -> list[StoredDocument]:
        """Every stored document with its file and its number of stored pages, by file path."""
        table = self._pages.open()
        if table is None:
            return []
        columns = ["doc_id", "file_name", "file_path", "page_count"]
        return stored_documents(queries.select(table, columns, None).to_pylist())

    @reports_storage_errors
    def metadata_keys(self) -> list[str]:
        """The users' own metadata keys on stored pages, sorted (no page fields): filterable."""
        table = self._pages.open()
        return [] if table is None else queries.metadata_keys(table)

    @reports_storage_errors
    def page_ids(
        self, filters: MetadataFilters | None = None, *, version: int | None = None
    ) -> list[str]:
        """The ids of the stored pages (matching ``filters``), at ``version`` if given."""
        table = self._pages.snapshot(version)
        if table is None:
            return []
        return queries.select_pages(table, ["page_id"], filters).column("page_id").to_pylist()

    def page_hashes(
        self,
        filters: MetadataFilters | None = None,
        *,
        page_ids: Sequence[str] | None = None,
        version: int | None = None,
    ) -> dict[str, str]:
        """``page_id -> content_hash`` of the stored pages (matching ``filters``, among
        ``page_ids`` if given), at ``version`` if given.

        A page whose hash equals :func:`~llama_index_vlm.pages.page_content_hash` of a node is
        stored unchanged: adding it again would write nothing. A cache of vectors can diff two
        of these to reload only the pages added or replaced since: a page's vectors change
        only together with its content hash.
        """
        return self._column_by_page("content_hash", filters, page_ids, version)

    def vector_counts(
        self,
        filters: MetadataFilters | None = None,
        *,
        page_ids: Sequence[str] | None = None,
        version: int | None = None,
    ) -> dict[str, int]:
        """``page_id -> n_vectors`` of the stored pages, selected as in :meth:`page_hashes`."""
        return self._column_by_page("n_vectors", filters, page_ids, version)

    @reports_storage_errors
    def _column_by_page(
        self,
        column: str,
        filters: MetadataFilters | None,
        page_ids: Sequence[str] | None,
        version: int | None,
    ) -> dict[str, Any]:
        table = self._pages.snapshot(version)
        if table is None or (page_ids is not None and not page_ids):
            return {}
        if version is not None and page_ids is None and not (filters and filters.filters):
            # Every page at a version (a retriever's refresh): the same scan gives the pages'
            # row addresses for the reads by id that follow (PageTable.read_pages).
            rows = self._pages.read_all(["page_id", column], version)
        else:
            rows = queries.select_pages(table, ["page_id", column], filters, page_ids=page_ids)
        return queries.column_map(rows, "page_id", column)

    @reports_storage_errors
    def iter_page_vectors(
        self,
        filters: MetadataFilters | None = None,
        batch_size: int = 256,
        *,
        version: int | None = None,
        dtype: Any = None,
    ) -> Iterator[tuple[list[str], list[np.ndarray]]]:
        """Yield ``(page_ids, vectors)`` in batches of up to ``batch_size`` pages.

        Each array is ``(n_vectors, dim)``, in the stored dtype unless ``dtype`` is given (a
        view into the batch's buffer when no conversion is needed). ``version`` reads that
        table version, so a reader can load a consistent snapshot and remember its number.
        """
        table = self._pages.snapshot(version)
        if table is not None:
            yield from queries.iter_vectors(table, page_where(filters), batch_size, dtype)

    @reports_storage_errors
    def get_page_vectors(
        self,
        page_ids: Sequence[str],
        *,
        version: int | None = None,
        dtype: Any = None,
    ) -> list[np.ndarray]:
        """The vectors of ``page_ids``, in that order.

        Raises:
            PageNotFoundError: some page ids are not stored (a ``KeyError`` that lists them).
        """
        page_ids = list(page_ids)
        table = self._pages.snapshot(version)
        if table is None or not page_ids:
            return queries.page_vectors(table, page_ids, dtype)
        rows = self._pages.read_pages(page_ids, ["page_id", VECTOR_COLUMN], version)
        return queries.page_vectors(table, page_ids, dtype, rows)

    @reports_storage_errors
    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Multi-vector (MaxSim) search with LanceDB's own exhaustive search.

        ``query.query_embedding`` is the query's ``(n, dim)`` vectors (1-D raises). Filters,
        ``doc_ids``, ``node_ids`` (``[]`` restricts nothing, as LlamaIndex means it) and
        ``similarity_top_k`` are honoured. Similarities are ColPali MaxSim scores (sum over
        query vectors of the best cosine with a page vector).

        The ColPali retriever searches the same vectors faster, from memory; this is the
        LlamaIndex vector-store interface to them, and a baseline to measure it against.
        """
        vectors = queries.query_vectors(query)
        table = self._pages.open()
        if table is None or query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        return queries.multivector_search(table, vectors, query)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(self.query, query, **kwargs)
