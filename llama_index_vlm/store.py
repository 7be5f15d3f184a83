"""LanceDB page store: one row per document page, with its image, text, metadata and multi-vector.

:class:`LanceDBPageStore` is a LlamaIndex ``BasePydanticVectorStore`` over an embedded LanceDB
table (a local directory by default; any URI LanceDB accepts, e.g. ``s3://bucket/index``).

Table layout (declared once in :func:`page_schema`):

==================  ===========================================================================
column              content
==================  ===========================================================================
``page_id``         node id, ``f"{doc_id}-p{page_number}"`` from the reader; unique
``doc_id``          sha256 of the source file (or the user's id); the node's ``ref_doc_id``
``file_path``...    ``file_path``, ``file_name``, ``page_number``, ``page_count``, ``width``,
                    ``height``, ``dpi``: the reader's page fields, typed
``image``           the encoded page image exactly as given (JPEG/PNG bytes)
``image_mimetype``  ``image/jpeg``, ``image/png``...
``text``            the node's text (the page's text layer, if the reader extracted it)
``metadata``        every other metadata key, as JSON (Lance JSONB, filterable)
``content_hash``    sha256 of image, text and metadata: an unchanged page is recognised
``n_vectors``       number of vectors of the page
``vectors``         ``list<fixed_size_list<float16, dim>>``: LanceDB's multi-vector column
==================  ===========================================================================

The encoder's fingerprint lives in the ``vectors`` field's metadata, which LanceDB carries into
every table version, so ``store.fingerprint`` is always the one the vectors were made with.

Atomicity: every :meth:`LanceDBPageStore.add` call is one LanceDB ``merge_insert`` (insert new
pages, replace changed ones, delete the stale pages of re-ingested files), which Lance commits as
one new table version: data files are written first and become visible only when the version's
manifest is published atomically. A process killed mid-add leaves the previous version, with
whole pages only; re-running the add finishes the job, as unchanged pages are skipped.

Example:
    >>> store = LanceDBPageStore(uri="./vlm_index")                       # doctest: +SKIP
    >>> store.add(page_documents, page_vectors=vectors, fingerprint=encoder.fingerprint)
    ...                                                                     # doctest: +SKIP
    >>> store.get_nodes(filters=MetadataFilters.from_dicts([{"key": "page_number", "value": 1}]))
    ...                                                                     # doctest: +SKIP

The retrieval fast path is the ColPali retriever, which loads the vectors once
(:meth:`LanceDBPageStore.iter_page_vectors`) and scores them in memory; :meth:`query` runs
LanceDB's own (exhaustive) multi-vector search and serves as a baseline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import lancedb
import numpy as np
import pyarrow as pa
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import (
    BaseNode,
    ImageNode,
    NodeRelationship,
    RelatedNodeInfo,
)
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from llama_index_vlm.errors import InvalidPageError, ModelMismatchError, StoreError
from llama_index_vlm.filters import in_list, quote_literal, to_lance_where
from llama_index_vlm.fingerprint import POOL_FACTOR_KEY, identity, pool_factor_of
from llama_index_vlm.pages import (
    HIDDEN_METADATA_KEYS,
    PAGE_FIELD_ALIASES,
    PAGE_FIELDS,
    canonical_json,
    check_unicode,
    content_hash,
    metadata_json,
    node_image,
    page_content_hash,
    page_text,
    split_metadata,
)

VECTOR_COLUMN = "vectors"
FINGERPRINT_KEY = "llama_index_vlm.fingerprint"
SCHEMA_VERSION_KEY = "llama_index_vlm.schema_version"
SCHEMA_VERSION = "1"
_PRIMARY_KEY_KEY = "lance-schema:unenforced-primary-key:position"

_ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "float": pa.float64()}
# Page ids per `page_id IN (...)` clause: keeps the SQL text small for big lookups.
_LOOKUP_CHUNK = 512
_NODE_COLUMNS = [*PAGE_FIELDS, "image", "image_mimetype", "text", "metadata"]


def page_schema(
    dim: int,
    vector_dtype: Literal["float16", "float32"] = "float16",
    fingerprint: dict[str, Any] | None = None,
) -> pa.Schema:
    """The Arrow schema of a page table with ``dim``-dimensional vectors.

    ``fingerprint`` (the encoder's) is stored in the ``vectors`` field's metadata.
    """
    value_type = {"float16": pa.float16(), "float32": pa.float32()}[vector_dtype]
    vector_metadata = {FINGERPRINT_KEY: canonical_json(fingerprint)} if fingerprint else None
    fields = [
        pa.field(name, _ARROW_TYPES[kind], nullable=name not in ("page_id", "doc_id"))
        for name, kind in PAGE_FIELDS.items()
    ]
    # Declaring page_id as the (unenforced) primary key makes Lance detect two concurrent
    # merge_inserts of the same new page and retry one, instead of committing both: without
    # it, two processes ingesting the same file at once would duplicate its pages.
    fields[0] = fields[0].with_metadata({_PRIMARY_KEY_KEY: "1"})
    fields += [
        pa.field("image", pa.large_binary()),
        pa.field("image_mimetype", pa.string()),
        pa.field("text", pa.large_string()),
        # Arrow's JSON type: Lance stores it as JSONB, so `json_extract` can filter on it.
        pa.field("metadata", pa.json_(pa.utf8())),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("n_vectors", pa.int32(), nullable=False),
        pa.field(
            VECTOR_COLUMN,
            pa.list_(pa.list_(value_type, dim)),
            nullable=False,
            metadata=vector_metadata,
        ),
    ]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION})


@dataclass
class AddResult:
    """What one :meth:`LanceDBPageStore.upsert_pages` call did.

    Attributes:
        page_ids: the ids of the pages given, in order.
        added: pages that were not in the store.
        replaced: pages whose content (image, text or metadata) changed.
        unchanged: pages already stored with the same content: nothing written for them.
        removed: stale pages deleted in the same commit: pages of an older version of the same
            file (same ``file_path``, another ``doc_id``) or beyond the document's new
            ``page_count``.
        version: the table version after the call (unchanged when nothing was written).
    """

    page_ids: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    version: int = 0

    @property
    def written(self) -> bool:
        """Whether the call committed a new table version."""
        return bool(self.added or self.replaced or self.removed)


@dataclass
class _PreparedPage:
    """A validated page; ``vectors`` is the caller's array, cast only when written."""

    page_id: str
    fields: dict[str, Any]
    image: bytes
    image_mimetype: str
    text: str
    metadata_json: str
    content_hash: str
    vectors: np.ndarray


class LanceDBPageStore(BasePydanticVectorStore):
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
    vector_dtype: Literal["float16", "float32"] = Field(
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

    _connection: Any = PrivateAttr(default=None)
    _table: Any = PrivateAttr(default=None)
    _write_lock: Any = PrivateAttr(default=None)

    def __init__(
        self,
        uri: str = "./vlm_index",
        table_name: str = "pages",
        vector_dtype: Literal["float16", "float32"] = "float16",
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
            connection = lancedb.connect(
                self.uri, read_consistency_interval=interval, storage_options=storage_options
            )
        self._connection = connection
        self._write_lock = threading.RLock()
        self._table = self._open_table()

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
    def table(self) -> Any | None:
        """The LanceDB table, or None before the first page is added."""
        return self._open_table()

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint of the encoder that made the stored vectors (None if none yet)."""
        table = self._open_table()
        if table is None:
            return None
        return _schema_fingerprint(table.schema)

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
        table = self._open_table()
        if table is None:
            return None
        return _schema_dim(table.schema)

    @property
    def version(self) -> int:
        """The table's current version; it changes whenever pages are written or deleted.

        A retriever caching vectors in memory compares it with the version it loaded to know
        when to refresh. 0 before the table exists.
        """
        table = self._open_table()
        return 0 if table is None else int(table.version)

    def check_fingerprint(self, fingerprint: dict[str, Any] | None, dim: int | None = None) -> None:
        """Raise :class:`ModelMismatchError` if vectors from ``fingerprint`` (or of ``dim``
        dimensions) cannot go into this store. Call it before encoding to fail early.
        """
        if fingerprint is not None:
            declared = fingerprint.get("embedding_dim")
            if dim is not None and declared is not None and int(declared) != dim:
                raise ModelMismatchError(
                    f"the encoder fingerprint says embedding_dim={declared}, but the page vectors "
                    f"have {dim} dimensions; pass the fingerprint of the encoder that made them"
                )
        table = self._open_table()
        if table is None:
            return
        schema = table.schema
        stored_dim, stored = _schema_dim(schema), _schema_fingerprint(schema)
        if stored is not None and fingerprint is not None:
            if identity(stored) != identity(fingerprint):
                raise ModelMismatchError(
                    f"table {self.table_name!r} at {self.uri!r} holds vectors from encoder "
                    f"{canonical_json(stored)}, not from {canonical_json(fingerprint)}; use the "
                    "same encoder, or another uri/table_name for the new model"
                )
            # Writers that pool say so; a query's fingerprint (the encoder's) does not.
            if POOL_FACTOR_KEY in fingerprint and pool_factor_of(fingerprint) != pool_factor_of(
                stored
            ):
                raise ModelMismatchError(
                    f"table {self.table_name!r} at {self.uri!r} holds page vectors pooled with "
                    f"pool_factor={pool_factor_of(stored):g}, these are pooled with "
                    f"pool_factor={pool_factor_of(fingerprint):g}; leave pool_factor unset to use "
                    "the table's, or use another uri/table_name"
                )
        if dim is not None and dim != stored_dim:
            raise ModelMismatchError(
                f"table {self.table_name!r} at {self.uri!r} holds {stored_dim}-dimensional "
                f"vectors (encoder {canonical_json(stored)}), these have {dim} dimensions "
                f"(encoder {canonical_json(fingerprint)}); use the same encoder, or another "
                "uri/table_name for the new model"
            )

    def refresh(self) -> None:
        """See other processes' commits now (only needed with ``read_consistency_interval``)."""
        table = self._open_table()
        if table is not None:
            table.checkout_latest()

    def _open_table(self) -> Any | None:
        if self._table is not None:
            return self._table
        try:
            table = self._connection.open_table(self.table_name)
        except (ValueError, FileNotFoundError):
            # Not created yet (or a creation killed before its first commit, which LanceDB
            # also reports as not found): the first add creates it.
            return None
        _check_page_table(table, self.table_name, self.uri)
        self._table = table
        return table

    def _table_for_write(self, dim: int, fingerprint: dict[str, Any] | None) -> Any:
        self.check_fingerprint(fingerprint, dim)
        table = self._open_table()
        if table is None:
            schema = page_schema(dim, self.vector_dtype, fingerprint)
            try:
                table = self._connection.create_table(self.table_name, schema=schema)
            except ValueError:
                # Another process created it since we looked: open it as it is and check it
                # like any existing table. (Not exist_ok=True: LanceDB then compares schemas,
                # and a stored JSON column never equals pa.json_, so this would fail.)
                table = self._connection.open_table(self.table_name)
            _check_page_table(table, self.table_name, self.uri)
            self._table = table
            self.check_fingerprint(fingerprint, dim)
        return table

    def _snapshot(self, version: int | None) -> Any | None:
        """The table, or a separate handle fixed at ``version`` (consistent multi-call reads)."""
        table = self._open_table()
        if version is None:
            return table
        if table is None:
            raise StoreError(f"table {self.table_name!r} has no version {version}")
        snapshot = self._connection.open_table(self.table_name)
        snapshot.checkout(version)
        return snapshot

    # ------------------------------------------------------------------ writing

    def add(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None = None,
        fingerprint: dict[str, Any] | None = None,
        **add_kwargs: Any,
    ) -> list[str]:
        """Store pages with their multi-vectors in one atomic commit; return their ids.

        Same as :meth:`upsert_pages`, returning only the page ids, as LlamaIndex expects.
        """
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
            ValueError: a node without an image, vectors of the wrong shape or not finite, or
                inconsistent page metadata. Nothing is written.
            StoreError: LanceDB could not write (disk full, permission denied...). Nothing
                is written; retry once the cause is fixed.
        """
        pages = self._prepare(nodes, page_vectors)
        if not pages:
            return AddResult(version=self.version)
        page_ids = [page.page_id for page in pages]
        unique = _deduplicate(pages)
        dim = int(unique[0].vectors.shape[1])
        with self._writing():
            table = self._table_for_write(dim, fingerprint)
            stored_hashes = self._stored_hashes(table, [page.page_id for page in unique])
            result = AddResult(page_ids=page_ids)
            to_write = []
            for page in unique:
                stored = stored_hashes.get(page.page_id)
                if stored is None:
                    result.added.append(page.page_id)
                    to_write.append(page)
                elif stored != page.content_hash:
                    result.replaced.append(page.page_id)
                    to_write.append(page)
                else:
                    result.unchanged.append(page.page_id)
            stale_where = _stale_condition(unique)
            if stale_where is not None:
                result.removed = _column(table, "page_id", stale_where)
                if not result.removed:
                    stale_where = None
            if not to_write and stale_where is None:
                result.version = int(table.version)
                return result
            schema = table.schema
            if fingerprint is not None and _schema_fingerprint(schema) is None:
                # A table made without a fingerprint adopts the first one given. This is a
                # commit of its own, before the data: a crash in between leaves no pages half
                # written, only the fingerprint recorded.
                table.update_field_metadata(
                    {
                        "path": VECTOR_COLUMN,
                        "metadata": {FINGERPRINT_KEY: canonical_json(fingerprint)},
                    }
                )
            if to_write:
                data = _to_arrow(to_write, page_schema(dim, _schema_dtype(schema)))
                merge = (
                    table.merge_insert("page_id")
                    # The condition repeats our own check, so a page rewritten by another
                    # process since we looked is not overwritten with identical content.
                    .when_matched_update_all(where="target.content_hash <> source.content_hash")
                    .when_not_matched_insert_all()
                )
                if stale_where is not None:
                    merge = merge.when_not_matched_by_source_delete(stale_where)
                outcome = merge.execute(data)
                result.version = int(outcome.version)
            else:
                table.delete(stale_where)
                result.version = int(table.version)
            return result

    async def aupsert_pages(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None,
        fingerprint: dict[str, Any] | None = None,
    ) -> AddResult:
        """:meth:`upsert_pages` in a worker thread."""
        return await asyncio.to_thread(self.upsert_pages, nodes, page_vectors, fingerprint)

    def unchanged_page_ids(self, nodes: Sequence[BaseNode]) -> set[str]:
        """Ids of the ``nodes`` already stored with the same content (image, text, metadata).

        Ingestion can skip encoding these pages: adding them would write nothing.
        """
        table = self._open_table()
        if table is None or not nodes:
            return set()
        hashes = {node.node_id: page_content_hash(node) for node in nodes}
        stored = self._stored_hashes(table, list(hashes))
        return {page_id for page_id, digest in hashes.items() if stored.get(page_id) == digest}

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every page of the document ``ref_doc_id`` (one commit; none if no page)."""
        self._delete_where(f"doc_id = {quote_literal(ref_doc_id)}")

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

        Giving neither raises ``ValueError``: use :meth:`clear` to delete everything.
        """
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes needs node_ids or filters; use clear() to delete all")
        if node_ids is not None and not node_ids:
            return
        self._delete_where(self._where(filters, node_ids=node_ids) or "TRUE")

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
        self._delete_where("TRUE")

    async def aclear(self) -> None:
        """:meth:`clear` in a worker thread."""
        await asyncio.to_thread(self.clear)

    def optimize(self, cleanup_older_than: timedelta | None = None) -> None:
        """Compact small files and drop versions older than ``cleanup_older_than``.

        Each add leaves its own files and every version stays readable; run this now and then
        on a long-lived index. Do not run it while another process is adding.
        """
        table = self._open_table()
        if table is not None:
            with self._writing():
                table.optimize(cleanup_older_than=cleanup_older_than)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the write lock, and report a failed LanceDB write as :class:`StoreError`.

        LanceDB raises ``RuntimeError`` (``lance error: LanceError(IO): ...``) or ``OSError``
        when the disk is full, a file cannot be written or a commit conflict outlasts its
        retries. Lance publishes a version only after all of its files are written, so the
        store still shows the last committed version and the same call can simply be retried.
        """
        with self._write_lock:
            try:
                yield
            except (OSError, RuntimeError) as error:
                raise StoreError(
                    f"writing to the page store at {self.uri!r} failed ({error}); nothing of "
                    "this call was committed and the store still holds its last committed "
                    "version. Free disk space or fix permissions, then run it again (pages "
                    "already stored are skipped)"
                ) from error

    def _delete_where(self, where: str) -> None:
        table = self._open_table()
        if table is None:
            return
        with self._writing():
            # Deleting nothing would still commit an empty version and make every retriever
            # cache look stale, so count first.
            if table.count_rows(where) == 0:
                return
            table.delete(where)

    # ------------------------------------------------------------------ reading

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        """Return the pages with these ids and/or matching ``filters`` as ``ImageNode``s.

        With ``node_ids``, nodes come in that order (missing ids are left out); with neither
        argument, every page. Each node carries the stored image (base64, with its mimetype),
        the text, the page fields and user metadata, and ``ref_doc_id`` = ``doc_id``.
        """
        table = self._open_table()
        if table is None or (node_ids is not None and not node_ids):
            return []
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(node_ids):
            where = self._where(filters, node_ids=chunk)
            rows += _select(table, _NODE_COLUMNS, where).to_pylist()
        nodes = [_row_to_node(row) for row in rows]
        if node_ids is not None:
            by_id = {node.node_id: node for node in nodes}
            nodes = [by_id[page_id] for page_id in dict.fromkeys(node_ids) if page_id in by_id]
        return nodes

    async def aget_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        """:meth:`get_nodes` in a worker thread."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def count(self, filters: MetadataFilters | None = None) -> int:
        """Number of pages (matching ``filters``).

        The store deliberately has no ``__len__``: an empty store would then be falsy, and
        ``store or default`` idioms would silently replace it.
        """
        table = self._open_table()
        if table is None:
            return 0
        return int(table.count_rows(self._where(filters)))

    def doc_ids(self) -> list[str]:
        """The ids of the stored documents, sorted."""
        table = self._open_table()
        if table is None:
            return []
        return sorted(set(_column(table, "doc_id", None)))

    def content_hashes(self, page_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of ``page_ids`` that is stored."""
        table = self._open_table()
        return {} if table is None else self._stored_hashes(table, list(page_ids))

    def page_ids(
        self, filters: MetadataFilters | None = None, *, version: int | None = None
    ) -> list[str]:
        """The ids of the stored pages (matching ``filters``), at ``version`` if given."""
        table = self._snapshot(version)
        return [] if table is None else _column(table, "page_id", self._where(filters))

    def page_hashes(
        self, filters: MetadataFilters | None = None, *, version: int | None = None
    ) -> dict[str, str]:
        """``page_id -> content_hash`` of the stored pages (matching ``filters``).

        A cache of vectors can diff two of these to reload only the pages added or replaced
        since: a page's vectors change only together with its content hash.
        """
        table = self._snapshot(version)
        if table is None:
            return {}
        rows = _select(table, ["page_id", "content_hash"], self._where(filters))
        return dict(
            zip(
                rows.column("page_id").to_pylist(),
                rows.column("content_hash").to_pylist(),
                strict=True,
            )
        )

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
        table version, so a retriever can load a consistent snapshot and remember its number.
        """
        table = self._snapshot(version)
        if table is None:
            return
        query = table.search().select(["page_id", VECTOR_COLUMN]).limit(None)
        where = self._where(filters)
        if where is not None:
            query = query.where(where)
        for batch in query.to_batches(batch_size):
            if batch.num_rows == 0:
                continue
            page_ids = batch.column("page_id").to_pylist()
            yield page_ids, _vectors_from_arrow(batch.column(VECTOR_COLUMN), dtype)

    def get_page_vectors(
        self,
        page_ids: Sequence[str],
        *,
        version: int | None = None,
        dtype: Any = None,
    ) -> list[np.ndarray]:
        """The vectors of ``page_ids``, in that order.

        Raises:
            KeyError: some page ids are not stored (the exception lists them).
        """
        table = self._snapshot(version)
        found: dict[str, np.ndarray] = {}
        if table is not None:
            for chunk in _chunks(list(page_ids)):
                batch = _select(table, ["page_id", VECTOR_COLUMN], in_list("page_id", chunk))
                vectors = _vectors_from_arrow(batch.column(VECTOR_COLUMN), dtype)
                found.update(zip(batch.column("page_id").to_pylist(), vectors, strict=True))
        missing = [page_id for page_id in page_ids if page_id not in found]
        if missing:
            raise KeyError(
                f"pages not in the store: {missing[:10]}{'...' if len(missing) > 10 else ''}"
            )
        return [found[page_id] for page_id in page_ids]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Multi-vector (MaxSim) search with LanceDB's own exhaustive search.

        ``query.query_embedding`` is the query's vectors: a list of ``dim``-sized lists (or a
        2-D array); a single vector also works. Filters, ``doc_ids``, ``node_ids`` and
        ``similarity_top_k`` are honoured. Similarities are ColPali MaxSim scores (sum over
        query vectors of the best cosine with a page vector).

        This is the baseline; the ColPali retriever, which keeps the vectors in memory, is the
        fast path.
        """
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(
                f"LanceDBPageStore supports only the default query mode, not {query.mode}"
            )
        if query.query_embedding is None:
            raise ValueError(
                "LanceDBPageStore.query needs query_embedding: the query's multi-vectors"
            )
        table = self._open_table()
        if table is None or query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        query_vectors = np.asarray(query.query_embedding, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        schema = table.schema
        if query_vectors.ndim != 2 or query_vectors.shape[1] != _schema_dim(schema):
            raise ModelMismatchError(
                f"query vectors have shape {query_vectors.shape}, the store holds "
                f"{_schema_dim(schema)}-dimensional vectors from {_schema_fingerprint(schema)}"
            )
        where = self._where(query.filters, node_ids=query.node_ids, doc_ids=query.doc_ids)
        search = (
            table.search(query_vectors, vector_column_name=VECTOR_COLUMN)
            # LanceDB's multi-vector search supports cosine only; its distance is
            # n_query_vectors - MaxSim.
            .distance_type("cosine")
            .select([*_NODE_COLUMNS, "_distance"])
            .limit(query.similarity_top_k)
        )
        if where is not None:
            search = search.where(where, prefilter=True)
        rows = search.to_arrow().to_pylist()
        nodes = [_row_to_node(row) for row in rows]
        similarities = [len(query_vectors) - float(row["_distance"]) for row in rows]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=similarities, ids=[node.node_id for node in nodes]
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(self.query, query, **kwargs)

    # ------------------------------------------------------------------ helpers

    def _where(
        self,
        filters: MetadataFilters | None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> str | None:
        parts = []
        if node_ids is not None:
            parts.append(in_list("page_id", node_ids))
        if doc_ids is not None:
            parts.append(in_list("doc_id", doc_ids))
        filter_sql = to_lance_where(filters, PAGE_FIELDS, aliases=PAGE_FIELD_ALIASES)
        if filter_sql is not None:
            parts.append(f"({filter_sql})")
        return " AND ".join(parts) if parts else None

    def _stored_hashes(self, table: Any, page_ids: list[str]) -> dict[str, str]:
        stored: dict[str, str] = {}
        for chunk in _chunks(page_ids):
            rows = _select(table, ["page_id", "content_hash"], in_list("page_id", chunk))
            stored.update(
                zip(
                    rows.column("page_id").to_pylist(),
                    rows.column("content_hash").to_pylist(),
                    strict=True,
                )
            )
        return stored

    def _prepare(
        self,
        nodes: Sequence[BaseNode],
        page_vectors: Sequence[np.ndarray] | np.ndarray | None,
    ) -> list[_PreparedPage]:
        if page_vectors is None:
            raise InvalidPageError(
                "LanceDBPageStore.add needs page_vectors=[one (n_vectors, dim) array per node]"
            )
        if len(page_vectors) != len(nodes):
            raise InvalidPageError(
                f"got {len(nodes)} nodes but {len(page_vectors)} page vector arrays"
            )
        table = self._open_table()
        dtype = np.dtype(self.vector_dtype if table is None else _schema_dtype(table.schema))
        pages = []
        dims = set()
        for node, vectors in zip(nodes, page_vectors, strict=True):
            page = _prepare_page(node, vectors, dtype)
            dims.add(page.vectors.shape[1])
            pages.append(page)
        if len(dims) > 1:
            raise ModelMismatchError(
                f"one add call mixes vectors of dimensions {sorted(dims)}: they cannot come "
                "from one encoder"
            )
        return pages


# ---------------------------------------------------------------------- module helpers


def _prepare_page(node: BaseNode, vectors: Any, dtype: Any) -> _PreparedPage:
    page_id = node.node_id
    image, mimetype = node_image(node)
    fields, user_metadata = split_metadata(node)
    text = page_text(node)
    user_json = metadata_json(user_metadata)
    check_unicode(fields, text, user_json)
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidPageError(
            f"page {page_id!r}: vectors must be a non-empty (n_vectors, dim) array, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise InvalidPageError(
            f"page {page_id!r}: vectors must be numbers, got dtype {array.dtype}"
        )
    # max/min propagate NaN and are far cheaper than isfinite over a cast copy; the cast
    # itself happens once, for the pages actually written (_to_arrow).
    high, low = float(array.max()), float(array.min())
    limit = float(np.finfo(dtype).max)
    if not (math.isfinite(high) and math.isfinite(low) and -limit <= low and high <= limit):
        raise InvalidPageError(
            f"page {page_id!r}: vectors contain NaN or infinity (or values too large for "
            f"{np.dtype(dtype).name})"
        )
    return _PreparedPage(
        page_id=page_id,
        fields=fields,
        image=image,
        image_mimetype=mimetype,
        text=text,
        metadata_json=user_json,
        content_hash=content_hash(image, mimetype, text, fields, user_json),
        vectors=array,
    )


def _deduplicate(pages: list[_PreparedPage]) -> list[_PreparedPage]:
    """Drop repeated pages of one call; two different contents under one id is an error."""
    unique: dict[str, _PreparedPage] = {}
    for page in pages:
        first = unique.setdefault(page.page_id, page)
        if first.content_hash != page.content_hash:
            raise InvalidPageError(f"page {page.page_id!r} is given twice with different content")
    by_file: dict[str, str] = {}
    page_counts: dict[str, int] = {}
    for page in unique.values():
        doc_id, page_count = page.fields["doc_id"], page.fields["page_count"]
        if page_count is not None and page_counts.setdefault(doc_id, page_count) != page_count:
            raise InvalidPageError(
                f"document {doc_id!r} comes with two page_counts ({page_counts[doc_id]}, "
                f"{page_count}) in one add call"
            )
        file_path = page.fields["file_path"]
        if file_path is None:
            continue
        doc_id = by_file.setdefault(file_path, page.fields["doc_id"])
        if doc_id != page.fields["doc_id"]:
            raise InvalidPageError(
                f"file {file_path!r} comes with two doc_ids ({doc_id!r}, "
                f"{page.fields['doc_id']!r}) in one add call; add one version of a file at a time"
            )
    return list(unique.values())


def _stale_condition(pages: list[_PreparedPage]) -> str | None:
    """SQL for stored pages that the pages being added make obsolete.

    - An older version of a file: same ``file_path``, another ``doc_id``.
    - Pages of a document beyond its ``page_count`` (a document that lost pages).
    Neither can match a page of this call, so the merge never deletes what it writes.
    """
    clauses = []
    files = {page.fields["file_path"]: page.fields["doc_id"] for page in pages}
    for file_path, doc_id in files.items():
        if file_path is not None:
            clauses.append(
                f"(file_path = {quote_literal(file_path)} AND doc_id <> {quote_literal(doc_id)})"
            )
    counts = {
        page.fields["doc_id"]: page.fields["page_count"]
        for page in pages
        if page.fields["page_count"] is not None
    }
    for doc_id, page_count in counts.items():
        clauses.append(f"(doc_id = {quote_literal(doc_id)} AND page_number > {int(page_count)})")
    return " OR ".join(clauses) if clauses else None


def _to_arrow(pages: list[_PreparedPage], schema: pa.Schema) -> pa.Table:
    columns: dict[str, Any] = {name: [page.fields[name] for page in pages] for name in PAGE_FIELDS}
    columns["image"] = [page.image for page in pages]
    columns["image_mimetype"] = [page.image_mimetype for page in pages]
    columns["text"] = [page.text for page in pages]
    columns["metadata"] = pa.array([page.metadata_json for page in pages], type=pa.json_(pa.utf8()))
    columns["content_hash"] = [page.content_hash for page in pages]
    counts = np.array([page.vectors.shape[0] for page in pages], dtype=np.int64)
    columns["n_vectors"] = pa.array(counts, type=pa.int32())
    dim = pages[0].vectors.shape[1]
    # Build the nested list from one flat buffer: no per-vector Python objects.
    vector_type = schema.field(VECTOR_COLUMN).type
    value_type = vector_type.value_type.value_type
    flat = np.concatenate(
        [page.vectors for page in pages],
        axis=0,
        dtype=value_type.to_pandas_dtype(),
        casting="unsafe",  # values were range-checked in _prepare_page
    ).reshape(-1)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), dim)
    offsets = np.zeros(len(pages) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    columns[VECTOR_COLUMN] = pa.ListArray.from_arrays(pa.array(offsets), rows, type=vector_type)
    arrays = [
        value if isinstance(value, pa.Array) else pa.array(value, type=schema.field(name).type)
        for name, value in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _vectors_from_arrow(column: pa.ChunkedArray | pa.Array, dtype: Any) -> list[np.ndarray]:
    """Split a ``list<fixed_size_list<float>>`` column into one ``(n, dim)`` array per row."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.value_type.list_size
    offsets = column.offsets.to_numpy()
    # `flatten()` honours the array's slice offset, so the values line up with offsets[0].
    values = column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    if dtype is not None and values.dtype != np.dtype(dtype):
        values = values.astype(dtype)
    start = offsets[0]
    return [values[offsets[i] - start : offsets[i + 1] - start] for i in range(len(column))]


def _schema_dtype(schema: pa.Schema) -> Literal["float16", "float32"]:
    value_type = schema.field(VECTOR_COLUMN).type.value_type.value_type
    return "float16" if value_type == pa.float16() else "float32"


def _schema_dim(schema: pa.Schema) -> int:
    return schema.field(VECTOR_COLUMN).type.value_type.list_size


def _schema_fingerprint(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.field(VECTOR_COLUMN).metadata or {}).get(FINGERPRINT_KEY.encode())
    return json.loads(raw) if raw else None


def _check_page_table(table: Any, table_name: str, uri: str) -> None:
    schema = table.schema
    version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode())
    if version != SCHEMA_VERSION.encode() or VECTOR_COLUMN not in schema.names:
        raise StoreError(
            f"table {table_name!r} at {uri!r} is not a llama-index-vlm page table (schema "
            f"version {version!r}); choose another table_name"
        )


def _select(table: Any, columns: list[str], where: str | None) -> pa.Table:
    query = table.search().select(columns).limit(None)
    if where is not None:
        query = query.where(where)
    return query.to_arrow()


def _column(table: Any, name: str, where: str | None) -> list[Any]:
    return _select(table, [name], where).column(name).to_pylist()


def _chunks(values: Sequence[str] | None) -> Iterator[Sequence[str] | None]:
    if values is None:
        yield None
        return
    values = list(values)
    for start in range(0, len(values), _LOOKUP_CHUNK):
        yield values[start : start + _LOOKUP_CHUNK]


def _row_to_node(row: dict[str, Any]) -> ImageNode:
    metadata: dict[str, Any] = {}
    for name, kind in PAGE_FIELDS.items():
        value = row.get(name)
        if value is None:
            continue
        if kind == "float" and float(value).is_integer():
            # dpi is stored as a float; a reader's 144 comes back as 144, not 144.0.
            value = int(value)
        metadata[name] = value
    if row.get("metadata"):
        metadata.update(json.loads(row["metadata"]))
    image = row.get("image")
    return ImageNode(
        id_=row["page_id"],
        text=row.get("text") or "",
        image=base64.b64encode(image).decode("ascii") if image else None,
        image_mimetype=row.get("image_mimetype"),
        metadata=metadata,
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=row["doc_id"])},
    )
