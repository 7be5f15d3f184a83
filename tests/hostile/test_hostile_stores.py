"""Corrupt or tampered stores (issue 13): a damaged table is refused on open with the damage
named, and pages whose vectors are not finite are named on every read, with how to repair.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from llama_index.core.vector_stores.types import VectorStoreQuery
from page_documents import document_pages as page_documents
from pdfs import write_numbered_pdf

from llama_index_vlm.errors import DamagedStoreError, StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture
def indexed(tmp_path, colpali_encoder):
    """A store of report.pdf (2 pages) and other.pdf (2 pages), and its path."""
    docs = tmp_path / "docs"
    write_numbered_pdf(docs / "report.pdf", 2)
    write_numbered_pdf(docs / "other.pdf", 2)
    uri = str(tmp_path / "index")
    store = LanceDBPageStore(uri=uri)
    ingest(docs, colpali_encoder, store, reader=PDFPageReader(dpi=36), show_progress=False)
    return store, docs


def _table(store: LanceDBPageStore):
    return store.client.open_table(store.table_name)


def _poison(store: LanceDBPageStore, page_id: str, value: float = float("nan")) -> None:
    """Overwrite the stored vectors of ``page_id`` with ``value``, bypassing the store's checks."""
    table = _table(store)
    row = table.search().where(f"page_id = '{page_id}'").limit(None).to_arrow()
    field_index = row.schema.get_field_index("vectors")
    field = row.schema.field(field_index)
    vectors = [[[value] * len(vector) for vector in row.column("vectors").to_pylist()[0]]]
    row = row.set_column(field_index, field, pa.array(vectors, type=field.type))
    table.delete(f"page_id = '{page_id}'")
    table.add(row)


def _page_of(store: LanceDBPageStore, file_name: str) -> str:
    return next(n.node_id for n in store.get_nodes() if n.metadata["file_name"] == file_name)


@pytest.mark.parametrize("column", ["text", "metadata", "content_hash", "doc_id"])
def test_a_dropped_column_is_refused_on_open_naming_it(indexed, column):
    store, _ = indexed
    _table(store).drop_columns([column])
    with pytest.raises(StoreError, match=f"damaged: column '{column}' is missing"):
        LanceDBPageStore(uri=store.uri)


def test_a_retyped_column_is_refused_on_open_naming_it(indexed):
    store, _ = indexed
    _table(store).alter_columns({"path": "n_vectors", "data_type": pa.int64()})
    with pytest.raises(StoreError, match="damaged: column 'n_vectors' is int64, not int32"):
        LanceDBPageStore(uri=store.uri)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("top_k", [1, 5])
def test_non_finite_vectors_name_their_document_on_search(indexed, colpali_encoder, value, top_k):
    store, docs = indexed
    _poison(store, _page_of(store, "report.pdf"), value)
    retriever = ColPaliRetriever(colpali_encoder, LanceDBPageStore(uri=store.uri), top_k)
    with pytest.raises(DamagedStoreError) as raised:
        retriever.retrieve("page")
    assert str(docs / "report.pdf") in str(raised.value)
    assert "delete" in str(raised.value) and "index their files again" in str(raised.value)
    assert len(raised.value.doc_ids) == 1 and len(raised.value.page_ids) == 1


def test_non_finite_vectors_are_named_by_the_stores_own_search(indexed):
    store, _ = indexed
    _poison(store, _page_of(store, "other.pdf"))
    query = VectorStoreQuery(query_embedding=np.ones((2, 128)).tolist(), similarity_top_k=4)
    with pytest.raises(DamagedStoreError, match="other.pdf"):
        store.query(query)


def test_non_finite_vectors_are_named_when_read_by_id(indexed):
    store, _ = indexed
    page_id = _page_of(store, "report.pdf")
    _poison(store, page_id)
    with pytest.raises(DamagedStoreError) as raised:
        store.get_page_vectors([page_id])
    assert raised.value.page_ids == [page_id]


def test_deleting_and_indexing_again_repairs_a_damaged_document(indexed, colpali_encoder):
    store, docs = indexed
    _poison(store, _page_of(store, "report.pdf"))
    damaged = LanceDBPageStore(uri=store.uri)
    retriever = ColPaliRetriever(colpali_encoder, damaged, similarity_top_k=4)
    with pytest.raises(DamagedStoreError) as raised:
        retriever.retrieve("page")
    for doc_id in raised.value.doc_ids:
        damaged.delete(doc_id)
    ingest(docs, colpali_encoder, damaged, reader=PDFPageReader(dpi=36), show_progress=False)
    assert len(retriever.retrieve("page")) == 4


def test_a_store_with_sound_vectors_reads_them_all(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    pages = page_documents("doc", 3)
    store.add(pages, [np.eye(4, 16, dtype=np.float32)] * 3)
    assert [v.shape for _, batch in store.iter_page_vectors() for v in batch] == [(4, 16)] * 3
