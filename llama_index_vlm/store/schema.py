"""The page table's Arrow schema, declared once, and what a stored schema says about its vectors.

A page table is recognised by the schema version in its metadata; its vectors' dimension and
dtype are read from the type of the ``vectors`` column, and the encoder's fingerprint from that
column's field metadata (which LanceDB carries into every table version).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pyarrow as pa

from llama_index_vlm.errors import StoreError
from llama_index_vlm.pages import PAGE_FIELDS, canonical_json

#: How vectors are stored: float16 halves disk and memory, float32 is exact.
VectorDType = Literal["float16", "float32"]

VECTOR_COLUMN = "vectors"
#: The columns a page node is rebuilt from (everything but the hash and the vectors).
NODE_COLUMNS = [*PAGE_FIELDS, "image", "image_mimetype", "text", "metadata"]

FINGERPRINT_KEY = "llama_index_vlm.fingerprint"
SCHEMA_VERSION_KEY = "llama_index_vlm.schema_version"
SCHEMA_VERSION = "1"
_PRIMARY_KEY_KEY = "lance-schema:unenforced-primary-key:position"

_ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "float": pa.float64()}
_VALUE_TYPES = {"float16": pa.float16(), "float32": pa.float32()}


def page_schema(
    dim: int,
    vector_dtype: VectorDType = "float16",
    fingerprint: dict[str, Any] | None = None,
) -> pa.Schema:
    """The Arrow schema of a page table with ``dim``-dimensional vectors.

    ``fingerprint`` (the encoder's) is stored in the ``vectors`` field's metadata.

    >>> page_schema(128).field("vectors").type
    ListType(list<item: fixed_size_list<item: halffloat>[128]>)
    """
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
            pa.list_(pa.list_(_VALUE_TYPES[vector_dtype], dim)),
            nullable=False,
            metadata=fingerprint_metadata(fingerprint) if fingerprint else None,
        ),
    ]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION})


def fingerprint_metadata(fingerprint: dict[str, Any]) -> dict[str, str]:
    """The ``vectors`` field metadata that records ``fingerprint``."""
    return {FINGERPRINT_KEY: canonical_json(fingerprint)}


def schema_dim(schema: pa.Schema) -> int:
    """The dimension of the vectors of a page table."""
    return schema.field(VECTOR_COLUMN).type.value_type.list_size


def schema_dtype(schema: pa.Schema) -> VectorDType:
    """How a page table stores its vectors: ``"float16"`` or ``"float32"``."""
    value_type = schema.field(VECTOR_COLUMN).type.value_type.value_type
    return "float16" if value_type == pa.float16() else "float32"


def schema_fingerprint(schema: pa.Schema) -> dict[str, Any] | None:
    """The fingerprint recorded with a page table's vectors (None if none was given)."""
    raw = (schema.field(VECTOR_COLUMN).metadata or {}).get(FINGERPRINT_KEY.encode())
    return json.loads(raw) if raw else None


def check_page_table(schema: pa.Schema, table_name: str, uri: str) -> None:
    """Refuse a table that is not a page table of this schema version (never overwrite it),
    or a page table whose columns were dropped or changed.

    Raises:
        StoreError: the table at ``uri`` named ``table_name`` is someone else's, or damaged.
    """
    version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode())
    if version != SCHEMA_VERSION.encode() or VECTOR_COLUMN not in schema.names:
        raise StoreError(
            f"table {table_name!r} at {uri!r} is not a llama-index-vlm page table (schema "
            f"version {version!r}); choose another table_name"
        )
    damage = schema_damage(schema)
    if damage:
        raise StoreError(
            f"the page table {table_name!r} at {uri!r} is damaged: {'; '.join(damage)}. Its "
            "pages cannot be read as pages. Index your files again into a new store (another "
            "directory, or this one once deleted); the files themselves are not affected"
        )


def schema_damage(schema: pa.Schema) -> list[str]:
    """What is wrong with a page table's columns: each missing column, and each column whose
    type is not the one :func:`page_schema` declares (empty when nothing is).

    >>> schema_damage(page_schema(128).remove(1))
    ["column 'doc_id' is missing"]
    """
    vectors = schema.field(VECTOR_COLUMN).type
    if not (
        pa.types.is_list(vectors)
        and pa.types.is_fixed_size_list(vectors.value_type)
        and vectors.value_type.value_type in _VALUE_TYPES.values()
    ):
        return [f"column {VECTOR_COLUMN!r} is {vectors}, not a list of float vectors"]
    expected = page_schema(schema_dim(schema), schema_dtype(schema))
    damage = []
    for field in expected:
        if field.name not in schema.names:
            damage.append(f"column {field.name!r} is missing")
        elif not _same_type(field.type, schema.field(field.name).type):
            damage.append(
                f"column {field.name!r} is {schema.field(field.name).type}, not {field.type}"
            )
    return damage


def _same_type(declared: pa.DataType, stored: pa.DataType) -> bool:
    # Lance stores Arrow's JSON type as JSONB, which reads back as large binary.
    if isinstance(declared, pa.BaseExtensionType):
        return stored.equals(declared) or stored.equals(pa.large_binary())
    return stored.equals(declared)
