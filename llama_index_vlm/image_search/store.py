"""LanceDB image store: one row per photo or figure, with one image-text vector, in the same
database as the pages.

:class:`LanceDBImageStore` is a LlamaIndex ``BasePydanticVectorStore`` over a LanceDB table
(``images`` by default) next to the page table: same ``uri``, another table. Each row holds:

==================  ===========================================================================
column              content
==================  ===========================================================================
``image_id``        node id (by default the sha256 of the image file's bytes); unique
``file_path``...    ``file_path``, ``file_name``, ``width``, ``height`` (of the original)
``image``           a small copy of the image (JPEG/PNG bytes as given), for reranking and
                    answering without the original file
``image_mimetype``  its MIME type
``text``            the node's text (a caption, if there is one)
``metadata``        every other metadata key, as JSON (filterable, as for pages)
``vector``          ``fixed_size_list<float32, dim>``; the encoder's fingerprint in its metadata
==================  ===========================================================================

Search is LanceDB's own vector search (cosine). Once the table holds ``ann_min_rows`` images,
:meth:`LanceDBImageStore.add` builds an ANN index (IVF-HNSW with scalar quantisation, or
IVF-PQ) the first time, and folds new rows into it as they accumulate; below that size, or
with ``exact=True``, every vector is compared (which takes milliseconds at that size).
Filters are translated to SQL by the same function as the page store's.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any, Literal

import lancedb
import numpy as np
import pyarrow as pa
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, ImageNode, NodeRelationship, RelatedNodeInfo
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

from llama_index_vlm.errors import InvalidPageError, ModelMismatchError, StoreError
from llama_index_vlm.fingerprint import check_compatible
from llama_index_vlm.pages import metadata_json, node_image
from llama_index_vlm.store.filters import in_list, quote_literal, to_lance_where
from llama_index_vlm.store.schema import FINGERPRINT_KEY, fingerprint_metadata

IndexType = Literal["IVF_HNSW_SQ", "IVF_PQ"]

VECTOR_COLUMN = "vector"
#: Image fields kept in their own columns (and filterable as such); other metadata is JSON.
IMAGE_FIELDS: dict[str, Literal["string", "integer", "float"]] = {
    "image_id": "string",
    "file_path": "string",
    "file_name": "string",
    "width": "integer",
    "height": "integer",
}
_ALIASES = {"node_id": "image_id", "ref_doc_id": "image_id"}
_NODE_COLUMNS = [*IMAGE_FIELDS, "image", "image_mimetype", "text", "metadata"]
_SCHEMA_VERSION_KEY = "llama_index_vlm.image_schema_version"
_SCHEMA_VERSION = "1"
#: Below this many rows an ANN index is not built: exact search is fast, and IVF needs rows
#: to train its partitions on.
DEFAULT_ANN_MIN_ROWS = 10_000


def image_schema(dim: int, fingerprint: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of an image table of ``dim``-dimensional vectors."""
    vector_metadata = fingerprint_metadata(fingerprint) if fingerprint else None
    fields = [
        pa.field(name, pa.string() if kind == "string" else pa.int64(), nullable=name != "image_id")
        for name, kind in IMAGE_FIELDS.items()
    ]
    fields += [
        pa.field("image", pa.large_binary()),
        pa.field("image_mimetype", pa.string()),
        pa.field("text", pa.large_string()),
        pa.field("metadata", pa.json_(pa.utf8())),
        pa.field(
            VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False, metadata=vector_metadata
        ),
    ]
    return pa.schema(fields, metadata={_SCHEMA_VERSION_KEY: _SCHEMA_VERSION})


class LanceDBImageStore(BasePydanticVectorStore):
    """LlamaIndex vector store of images (one image-text vector each) in LanceDB.

    Args:
        uri: the database: a local directory or any URI LanceDB accepts; use the page store's
            to keep photos and pages together.
        table_name: the table inside ``uri``.
        ann_min_rows: build the ANN index once the table holds this many images.
        index_type: ``"IVF_HNSW_SQ"`` (the default: high recall, no refine step) or
            ``"IVF_PQ"`` (smaller; searched with ``refine_factor``).
        nprobes: IVF partitions searched per query (more: higher recall, slower).
        refine_factor: with IVF_PQ, re-score this many times ``top_k`` candidates exactly.
        storage_options: object-store options for LanceDB.

    Example::

        store = LanceDBImageStore(uri="./vlm_index")
        store.add(nodes)  # ImageNodes with .embedding set (see index_images)
        result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=5))
    """

    stores_text: bool = True
    flat_metadata: bool = False

    uri: str = Field(default="./vlm_index", description="Local directory or LanceDB URI.")
    table_name: str = Field(default="images", description="Name of the image table.")
    ann_min_rows: int = Field(
        default=DEFAULT_ANN_MIN_ROWS, description="Rows from which an ANN index is built."
    )
    index_type: IndexType = Field(default="IVF_HNSW_SQ", description="The ANN index type.")
    nprobes: int = Field(default=20, description="IVF partitions searched per query.")
    refine_factor: int | None = Field(
        default=None, description="IVF_PQ: candidates re-scored exactly, times top_k."
    )
    storage_options: dict[str, str] | None = Field(
        default=None, description="Object-store options for LanceDB."
    )

    _connection: Any = PrivateAttr(default=None)
    _table: Any = PrivateAttr(default=None)

    def __init__(self, uri: str = "./vlm_index", table_name: str = "images", **kwargs: Any):
        connection = kwargs.pop("connection", None)
        super().__init__(uri=str(uri), table_name=table_name, **kwargs)
        self._connection = connection or lancedb.connect(
            self.uri, read_consistency_interval=timedelta(0), storage_options=self.storage_options
        )

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by ``to_dict``/``from_dict``."""
        return "LanceDBImageStore"

    @property
    def client(self) -> Any:
        """The LanceDB connection."""
        return self._connection

    def _open_table(self) -> Any | None:
        """The LanceDB table, or None before the first image is added."""
        if self._table is None:
            try:
                table = self._connection.open_table(self.table_name)
            except (ValueError, FileNotFoundError):
                return None
            version = (table.schema.metadata or {}).get(_SCHEMA_VERSION_KEY.encode())
            if version != _SCHEMA_VERSION.encode():
                raise StoreError(
                    f"table {self.table_name!r} at {self.uri!r} is not a llama-index-vlm image "
                    "table; choose another table_name"
                )
            self._table = table
        return self._table

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint of the encoder that made the stored vectors (None if none yet)."""
        table = self._open_table()
        if table is None:
            return None
        raw = (table.schema.field(VECTOR_COLUMN).metadata or {}).get(FINGERPRINT_KEY.encode())
        return json.loads(raw) if raw else None

    @property
    def has_ann_index(self) -> bool:
        """Whether the vector column has an ANN index."""
        table = self._open_table()
        return table is not None and any(
            VECTOR_COLUMN in index.columns for index in table.list_indices()
        )

    def check_fingerprint(self, fingerprint: dict[str, Any] | None) -> None:
        """Raise :class:`ModelMismatchError` if vectors of ``fingerprint`` cannot go (or be
        searched) here: the table holds another encoder's vectors.
        """
        check_compatible(
            fingerprint, stored=self.fingerprint, table=f"table {self.table_name!r} at {self.uri!r}"
        )

    # ------------------------------------------------------------------ writing

    def add(
        self,
        nodes: list[BaseNode],
        fingerprint: dict[str, Any] | None = None,
        **add_kwargs: Any,
    ) -> list[str]:
        """Insert or replace images (``ImageNode`` s with ``.embedding`` set); one commit.

        Args:
            nodes: the images: node id, image (bytes or path), metadata and embedding.
            fingerprint: the image encoder's; stored with a new table and checked after.

        Raises:
            InvalidPageError: a node without an image or an embedding, or embeddings of
                different dimensions, or not finite. Nothing is written.
            ModelMismatchError: the table holds another encoder's vectors.
        """
        if not nodes:
            return []
        data = _to_arrow(nodes)
        dim = data.schema.field(VECTOR_COLUMN).type.list_size
        self.check_fingerprint(fingerprint)
        table = self._open_table()
        if table is None:
            table = self._connection.create_table(
                self.table_name, schema=image_schema(dim, fingerprint)
            )
            self._table = table
        stored_dim = table.schema.field(VECTOR_COLUMN).type.list_size
        if stored_dim != dim:
            raise ModelMismatchError(
                f"table {self.table_name!r} holds {stored_dim}-dimensional vectors, these have "
                f"{dim}: use the encoder the table was made with, or another table_name"
            )
        table.merge_insert(
            "image_id"
        ).when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._maintain_index()
        return [node.node_id for node in nodes]

    def create_ann_index(self, num_partitions: int | None = None) -> None:
        """Build (or rebuild) the ANN index on the vectors now, whatever the table's size.

        Raises:
            StoreError: the table is empty or too small for LanceDB to train the index.
        """
        from lancedb.index import IvfHnswSq, IvfPq

        table = self._open_table()
        if table is None:
            raise StoreError("the image table is empty; add images before building an index")
        rows = table.count_rows()
        partitions = num_partitions or max(1, min(int(np.sqrt(rows)), rows // 256 or 1))
        if self.index_type == "IVF_PQ":
            config = IvfPq(distance_type="cosine", num_partitions=partitions)
        else:
            config = IvfHnswSq(distance_type="cosine", num_partitions=partitions)
        try:
            table.create_index(VECTOR_COLUMN, config=config, replace=True)
        except (ValueError, RuntimeError, OSError) as error:
            raise StoreError(
                f"LanceDB could not build the {self.index_type} index: {error}"
            ) from error

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the image ``ref_doc_id`` (its image id)."""
        self._delete_where(f"image_id = {quote_literal(ref_doc_id)}")

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the images with these ids and/or matching ``filters`` (both must hold)."""
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes needs node_ids or filters; use clear() to delete all")
        if node_ids is not None and not node_ids:
            return
        self._delete_where(self._where(filters, node_ids) or "TRUE")

    def clear(self) -> None:
        """Delete every image (the table and its fingerprint remain)."""
        self._delete_where("TRUE")

    # ------------------------------------------------------------------ reading

    def count(self, filters: MetadataFilters | None = None) -> int:
        """Number of images (matching ``filters``)."""
        table = self._open_table()
        return 0 if table is None else int(table.count_rows(self._where(filters)))

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The images with these ids and/or matching ``filters``, as ``ImageNode`` s."""
        table = self._open_table()
        if table is None or (node_ids is not None and not node_ids):
            return []
        query = table.search().select(_NODE_COLUMNS).limit(None)
        where = self._where(filters, node_ids)
        if where is not None:
            query = query.where(where)
        nodes = [_row_to_node(row) for row in query.to_arrow().to_pylist()]
        if node_ids is not None:
            by_id = {node.node_id: node for node in nodes}
            nodes = [by_id[i] for i in dict.fromkeys(node_ids) if i in by_id]
        return nodes

    def query(
        self, query: VectorStoreQuery, exact: bool = False, **kwargs: Any
    ) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` images nearest ``query.query_embedding`` (cosine).

        Filters, ``node_ids`` and ``doc_ids`` (image ids) are applied before the search, so
        ``top_k`` results come back whenever that many images match. Similarities are cosine
        similarities. ``exact=True`` bypasses the ANN index.
        """
        table = self._open_table()
        if query.query_embedding is None:
            raise ValueError("LanceDBImageStore.query needs query_embedding (one vector)")
        if table is None or query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        vector = np.asarray(query.query_embedding, dtype=np.float32).reshape(-1)
        dim = table.schema.field(VECTOR_COLUMN).type.list_size
        if vector.shape[0] != dim:
            raise ModelMismatchError(
                f"the query vector has {vector.shape[0]} dimensions, the images {dim}: embed "
                "the query with the encoder the images were indexed with"
            )
        search = (
            table.search(vector, vector_column_name=VECTOR_COLUMN)
            .distance_type("cosine")
            .select([*_NODE_COLUMNS, "_distance"])
            .limit(query.similarity_top_k)
        )
        search = self._tuned(search, exact)
        ids = list(query.node_ids or []) + list(query.doc_ids or [])
        where = self._where(query.filters, ids if ids else None)
        if where is not None:
            search = search.where(where, prefilter=True)
        rows = search.to_arrow().to_pylist()
        nodes = [_row_to_node(row) for row in rows]
        return VectorStoreQueryResult(
            nodes=nodes,
            similarities=[1.0 - float(row["_distance"]) for row in rows],
            ids=[node.node_id for node in nodes],
        )

    # ------------------------------------------------------------------ helpers

    def _tuned(self, search: Any, exact: bool) -> Any:
        if exact:
            return search.bypass_vector_index()
        if self.has_ann_index:
            search = search.nprobes(self.nprobes)
            if self.index_type == "IVF_PQ" and self.refine_factor:
                search = search.refine_factor(self.refine_factor)
        return search

    def _maintain_index(self) -> None:
        """Build the ANN index once the table is big enough; fold new rows into it later."""
        table = self._open_table()
        if not self.has_ann_index:
            if table.count_rows() >= self.ann_min_rows:
                self.create_ann_index()
            return
        index = next(i for i in table.list_indices() if VECTOR_COLUMN in i.columns)
        stats = table.index_stats(index.name)
        # Unindexed rows are searched exactly, which stays cheap while they are few.
        if stats.num_unindexed_rows > max(1000, stats.num_indexed_rows // 10):
            table.optimize()

    def _where(
        self, filters: MetadataFilters | None, node_ids: list[str] | None = None
    ) -> str | None:
        parts = []
        if node_ids is not None:
            parts.append(in_list("image_id", node_ids))
        sql = to_lance_where(filters, IMAGE_FIELDS, aliases=_ALIASES)
        if sql is not None:
            parts.append(f"({sql})")
        return " AND ".join(parts) if parts else None

    def _delete_where(self, where: str) -> None:
        table = self._open_table()
        if table is not None and table.count_rows(where):
            table.delete(where)


def _to_arrow(nodes: list[BaseNode]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in _NODE_COLUMNS}
    vectors = []
    for node in nodes:
        if node.embedding is None:
            raise InvalidPageError(f"image {node.node_id!r} has no embedding; embed it first")
        image, mimetype = node_image(node)
        metadata = dict(node.metadata)
        columns["image_id"].append(node.node_id)
        for name in ("file_path", "file_name", "width", "height"):
            columns[name].append(metadata.pop(name, None))
        columns["image"].append(image)
        columns["image_mimetype"].append(mimetype)
        columns["text"].append(getattr(node, "text", "") or "")
        columns["metadata"].append(metadata_json(metadata))
        vectors.append(np.asarray(node.embedding, dtype=np.float32))
    if len({vector.shape for vector in vectors}) != 1 or vectors[0].ndim != 1:
        raise InvalidPageError("the images' embeddings must be vectors of one dimension")
    matrix = np.stack(vectors)
    if not np.isfinite(matrix).all():
        raise InvalidPageError("an image embedding holds NaN or infinity")
    schema = image_schema(matrix.shape[1])
    arrays = [pa.array(columns[name], type=schema.field(name).type) for name in _NODE_COLUMNS]
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]))
    return pa.Table.from_arrays(arrays, schema=schema)


def _row_to_node(row: dict[str, Any]) -> ImageNode:
    metadata = {
        name: row[name] for name in IMAGE_FIELDS if name != "image_id" and row.get(name) is not None
    }
    if row.get("metadata"):
        metadata.update(json.loads(row["metadata"]))
    image = row.get("image")
    return ImageNode(
        id_=row["image_id"],
        text=row.get("text") or "",
        image=base64.b64encode(image).decode("ascii") if image else None,
        image_path=row.get("file_path"),
        image_mimetype=row.get("image_mimetype"),
        metadata=metadata,
        excluded_llm_metadata_keys=["file_path", "width", "height"],
        excluded_embed_metadata_keys=["file_path", "width", "height"],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=row["image_id"])},
    )
