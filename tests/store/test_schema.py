"""Tests of ``llama_index_vlm.store.schema``: the page table's Arrow schema, declared once, and
what a stored schema says about its vectors.
"""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest
from page_documents import DIM, document_pages, unit_vectors

from llama_index_vlm.errors import StoreError
from llama_index_vlm.store import VECTOR_COLUMN, LanceDBPageStore, page_schema
from llama_index_vlm.store.schema import (
    check_page_table,
    schema_dim,
    schema_dtype,
    schema_fingerprint,
)

FINGERPRINT = {"model_class": "ColPaliForRetrieval", "embedding_dim": DIM}


def test_a_stored_table_has_the_declared_schema_with_a_multivector_column(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    schema = store.schema
    assert schema.field(VECTOR_COLUMN).type == pa.list_(pa.list_(pa.float16(), DIM))
    expected = page_schema(DIM)
    assert schema.names == expected.names
    assert schema.field("page_number").type == pa.int64()


def test_foreign_table_is_refused_not_overwritten(tmp_path):
    uri = str(tmp_path / "index")
    lancedb.connect(uri).create_table("pages", data=pa.table({"x": [1, 2]}))
    with pytest.raises(StoreError, match="not a llama-index-vlm page table"):
        LanceDBPageStore(uri=uri)
    assert lancedb.connect(uri).open_table("pages").count_rows() == 2


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dimension_and_dtype_are_read_back_from_the_schema(dtype):
    schema = page_schema(48, dtype)
    assert (schema_dim(schema), schema_dtype(schema)) == (48, dtype)


def test_the_fingerprint_is_read_back_from_the_schema():
    assert schema_fingerprint(page_schema(DIM, fingerprint=FINGERPRINT)) == FINGERPRINT


def test_a_schema_without_fingerprint_has_none():
    assert schema_fingerprint(page_schema(DIM)) is None


def test_page_id_and_doc_id_are_required_and_other_page_fields_optional():
    schema = page_schema(DIM)
    assert [name for name in ("page_id", "doc_id", "file_path") if schema.field(name).nullable] == [
        "file_path"
    ]


def test_a_schema_of_another_version_is_refused():
    schema = page_schema(DIM).with_metadata({"llama_index_vlm.schema_version": "0"})
    with pytest.raises(StoreError, match="schema version b'0'"):
        check_page_table(schema, "pages", "./index")
