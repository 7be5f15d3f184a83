"""Tests of ``LanceDBPageStore``: round trips, idempotence, replacement, fingerprints, deletes,
async variants, native multi-vector search, and a writer killed with SIGKILL mid-ingest.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import runpy
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from llama_index.core.schema import ImageDocument, ImageNode, NodeRelationship, TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from PIL import Image

from llama_index_vlm.errors import ModelMismatchError, StoreError
from llama_index_vlm.images import decode_image
from llama_index_vlm.pages import page_content_hash
from llama_index_vlm.store import (
    VECTOR_COLUMN,
    AddResult,
    LanceDBPageStore,
    page_schema,
)

DIM = 16
FINGERPRINT = {
    "model": "vidore/colpali-v1.3-hf",
    "revision": "abc",
    "model_class": "ColPaliForRetrieval",
    "embedding_dim": DIM,
    "weights_digest": "0c516a4216330f1d",
    "processor": {"class": "ColPaliProcessor", "image_seq_length": 1024},
}
OTHER_FINGERPRINT = {
    "model": "vidore/colqwen2-v1.0-hf",
    "revision": "def",
    "model_class": "ColQwen2ForRetrieval",
    "embedding_dim": DIM,
    "weights_digest": "4b4af5771ab070a2",
    "processor": {"class": "ColQwen2Processor", "max_pixels": 602112},
}


def _image_bytes(seed: int, image_format: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def _vectors(seed: int, n_vectors: int | None = None, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = n_vectors or int(rng.integers(3, 9))
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _page(
    doc_id: str,
    page_number: int,
    page_count: int = 3,
    file_path: str | None = None,
    seed: int | None = None,
    text: str | None = None,
    image_format: str = "PNG",
    **user_metadata,
) -> ImageDocument:
    file_path = file_path or f"/docs/{doc_id}.pdf"
    seed = seed if seed is not None else zlib.crc32(f"{doc_id}-{page_number}".encode())
    return ImageDocument(
        id_=f"{doc_id}-p{page_number}",
        image=base64.b64encode(_image_bytes(seed, image_format)).decode(),
        image_mimetype="image/png" if image_format == "PNG" else "image/jpeg",
        text=text if text is not None else f"page {page_number} of {doc_id}",
        metadata={
            "doc_id": doc_id,
            "page_id": f"{doc_id}-p{page_number}",
            "file_path": file_path,
            "file_name": Path(file_path).name,
            "page_number": page_number,
            "page_count": page_count,
            "width": 16,
            "height": 24,
            "dpi": 144,
            **user_metadata,
        },
    )


def _doc(doc_id: str, page_count: int = 3, **kwargs) -> list[ImageDocument]:
    return [_page(doc_id, n, page_count, **kwargs) for n in range(1, page_count + 1)]


def _vectors_for(pages) -> list[np.ndarray]:
    return [_vectors(zlib.crc32(page.node_id.encode())) for page in pages]


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    return LanceDBPageStore(uri=str(tmp_path / "index"))


def _ids(nodes) -> list[str]:
    return sorted(node.node_id for node in nodes)


# ---------------------------------------------------------------------- round trip


def test_empty_store(store):
    assert store.fingerprint is None
    assert store.dim is None
    assert store.version == 0
    assert store.count() == 0
    assert store.doc_ids() == []
    assert store.get_nodes() == []
    assert list(store.iter_page_vectors()) == []
    assert store.query(VectorStoreQuery(query_embedding=[[1.0] * DIM])).ids == []
    store.delete("nothing")
    store.clear()
    assert store.version == 0
    assert store.add([], page_vectors=[]) == []


def test_round_trip_vectors_metadata_image_text(store):
    pages = _doc("d1", 3, author="O'Neil", tags=["a", "b"], year=2023, nested={"k": [1, 2]})
    pages[1] = _page("d1", 2, 3, image_format="JPEG", author="x", year=1)
    vectors = _vectors_for(pages)
    assert store.add(pages, page_vectors=vectors, fingerprint=FINGERPRINT) == [
        "d1-p1",
        "d1-p2",
        "d1-p3",
    ]
    nodes = store.get_nodes(["d1-p3", "d1-p1", "missing", "d1-p2"])
    assert [node.node_id for node in nodes] == ["d1-p3", "d1-p1", "d1-p2"]
    originals = {page.node_id: page for page in pages}
    for node in nodes:
        original = originals[node.node_id]
        assert isinstance(node, ImageNode)
        assert node.metadata == original.metadata
        assert node.text == original.text
        assert node.ref_doc_id == "d1"
        assert node.relationships[NodeRelationship.SOURCE].node_id == "d1"
        assert node.image_mimetype == original.image_mimetype
        # The stored bytes are the given bytes, not a re-encoding.
        assert base64.b64decode(node.image) == base64.b64decode(original.image)
        assert Image.open(node.resolve_image()).size == (16, 24)
    stored = store.get_page_vectors(["d1-p2", "d1-p1", "d1-p3"])
    for page_id, array in zip(["d1-p2", "d1-p1", "d1-p3"], stored, strict=True):
        expected = vectors[[p.node_id for p in pages].index(page_id)]
        assert array.dtype == np.float16
        assert array.shape == expected.shape
        np.testing.assert_allclose(array.astype(np.float32), expected, atol=1e-3)
    assert store.fingerprint == FINGERPRINT
    assert store.dim == DIM
    assert store.count() == 3
    assert store.doc_ids() == ["d1"]
    assert store.page_hashes(page_ids=["d1-p1"]) == {"d1-p1": page_content_hash(pages[0])}


def test_float32_store_is_exact(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"), vector_dtype="float32")
    pages = _doc("d1", 2)
    vectors = _vectors_for(pages)
    store.add(pages, page_vectors=vectors)
    for array, expected in zip(store.get_page_vectors(["d1-p1", "d1-p2"]), vectors, strict=True):
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, expected)
    assert store.get_page_vectors(["d1-p1"], dtype=np.float16)[0].dtype == np.float16


def test_schema_is_declared_once_with_multivector_column(store):
    store.add(_doc("d1", 1), page_vectors=[_vectors(1)], fingerprint=FINGERPRINT)
    schema = store.schema
    assert schema.field(VECTOR_COLUMN).type == pa.list_(pa.list_(pa.float16(), DIM))
    expected = page_schema(DIM)
    assert schema.names == expected.names
    assert schema.field("page_number").type == pa.int64()


def test_image_path_and_text_nodes(store, tmp_path):
    image_file = tmp_path / "scan.jpg"
    image_file.write_bytes(_image_bytes(5, "JPEG"))
    node = ImageNode(id_="scan-p1", image_path=str(image_file), metadata={"doc_id": "scan"})
    store.add([node], page_vectors=[_vectors(5)])
    (stored,) = store.get_nodes(["scan-p1"])
    assert stored.image_mimetype == "image/jpeg"
    assert base64.b64decode(stored.image) == image_file.read_bytes()
    assert stored.metadata == {"doc_id": "scan", "page_id": "scan-p1"}
    # Without a mimetype, the store finds it in the bytes.
    bare = ImageNode(id_="bare-p1", image=base64.b64encode(_image_bytes(6)).decode())
    store.add([bare], page_vectors=[_vectors(6)])
    assert store.get_nodes(["bare-p1"])[0].image_mimetype == "image/png"


# ---------------------------------------------------------------------- idempotence


def test_readd_unchanged_writes_nothing(store):
    pages = _doc("d1", 3)
    vectors = _vectors_for(pages)
    first = store.upsert_pages(pages, vectors, fingerprint=FINGERPRINT)
    assert isinstance(first, AddResult)
    assert first.added == ["d1-p1", "d1-p2", "d1-p3"] and first.written
    version = store.version
    again = store.upsert_pages(pages, vectors, fingerprint=FINGERPRINT)
    assert again.unchanged == ["d1-p1", "d1-p2", "d1-p3"]
    assert again.added == again.replaced == again.removed == []
    assert not again.written
    assert store.version == version == again.version
    stored = store.page_hashes(page_ids=[page.node_id for page in pages])
    unchanged = {page.node_id for page in pages if stored[page.node_id] == page_content_hash(page)}
    assert unchanged == {"d1-p1", "d1-p2", "d1-p3"}


def test_duplicate_pages_in_one_call(store):
    page = _page("d1", 1)
    assert store.add([page, page], page_vectors=[_vectors(1), _vectors(1)]) == ["d1-p1"] * 2
    assert store.count() == 1
    changed = _page("d1", 1, text="other")
    with pytest.raises(ValueError, match="twice with different content"):
        store.add([page, changed], page_vectors=[_vectors(1), _vectors(1)])


def test_changed_page_is_replaced(store):
    pages = _doc("d1", 3, tag="old")
    store.add(pages, page_vectors=_vectors_for(pages))
    version = store.version
    changed = [
        _page("d1", 1, 3, tag="old"),  # unchanged
        _page("d1", 2, 3, tag="new"),  # metadata changed
        _page("d1", 3, 3, tag="old", text="new text"),  # text changed
    ]
    new_vectors = [_vectors(100 + i) for i in range(3)]
    result = store.upsert_pages(changed, new_vectors)
    assert result.unchanged == ["d1-p1"]
    assert result.replaced == ["d1-p2", "d1-p3"]
    assert result.added == [] and result.removed == []
    assert store.version == version + 1 == result.version
    assert store.count() == 3
    assert store.get_nodes(["d1-p2"])[0].metadata["tag"] == "new"
    assert store.get_nodes(["d1-p3"])[0].text == "new text"
    np.testing.assert_allclose(
        store.get_page_vectors(["d1-p2"])[0].astype(np.float32), new_vectors[1], atol=1e-3
    )
    # An unchanged page keeps its original vectors.
    np.testing.assert_allclose(
        store.get_page_vectors(["d1-p1"])[0].astype(np.float32),
        _vectors_for(pages)[0],
        atol=1e-3,
    )


def test_changed_file_replaces_its_old_pages_in_one_commit(store):
    store.add(
        _doc("old", 4, file_path="/docs/report.pdf"), page_vectors=[_vectors(i) for i in range(4)]
    )
    store.add(_doc("other", 2), page_vectors=[_vectors(i) for i in range(2)])
    version = store.version
    new_pages = _doc("new", 3, file_path="/docs/report.pdf")
    # The new version arrives in two add calls, as an ingestion pipeline would send it.
    first = store.upsert_pages(new_pages[:2], [_vectors(10), _vectors(11)])
    assert first.added == ["new-p1", "new-p2"]
    assert sorted(first.removed) == ["old-p1", "old-p2", "old-p3", "old-p4"]
    assert store.version == version + 1
    second = store.upsert_pages(new_pages[2:], [_vectors(12)])
    assert second.added == ["new-p3"] and second.removed == []
    assert store.doc_ids() == ["new", "other"]
    assert _ids(store.get_nodes()) == ["new-p1", "new-p2", "new-p3", "other-p1", "other-p2"]


def test_document_with_fewer_pages_drops_the_extra_pages(store):
    store.add(_doc("manual", 4, file_path="/m.pdf"), page_vectors=[_vectors(i) for i in range(4)])
    shorter = [_page("manual", n, 2, file_path="/m.pdf", text="v2") for n in (1, 2)]
    result = store.upsert_pages(shorter, [_vectors(20), _vectors(21)])
    assert result.replaced == ["manual-p1", "manual-p2"]
    assert sorted(result.removed) == ["manual-p3", "manual-p4"]
    assert _ids(store.get_nodes()) == ["manual-p1", "manual-p2"]


def test_same_bytes_at_two_paths_are_stored_once_and_stay_idempotent(store):
    first = _doc("same", 2, file_path="/a/x.pdf")
    second = _doc("same", 2, file_path="/b/x.pdf")
    store.add(first, page_vectors=_vectors_for(first))
    version = store.version
    result = store.upsert_pages(second, _vectors_for(second))
    assert result.unchanged == ["same-p1", "same-p2"]
    assert store.version == version


# ---------------------------------------------------------------------- fingerprints


def test_fingerprint_mismatch_raises_and_writes_nothing(store):
    store.add(_doc("d1", 2), page_vectors=[_vectors(1), _vectors(2)], fingerprint=FINGERPRINT)
    version = store.version
    with pytest.raises(ModelMismatchError) as raised:
        store.add(
            _doc("d2", 2), page_vectors=[_vectors(3), _vectors(4)], fingerprint=OTHER_FINGERPRINT
        )
    message = str(raised.value)
    assert "colpali-v1.3-hf" in message and "colqwen2-v1.0-hf" in message
    assert store.version == version
    assert store.doc_ids() == ["d1"]
    with pytest.raises(ModelMismatchError):
        store.check_fingerprint(OTHER_FINGERPRINT)
    store.check_fingerprint(dict(reversed(list(FINGERPRINT.items()))))  # key order is irrelevant


def test_same_model_from_another_path_is_accepted_but_another_finetune_is_not(store):
    store.add(_doc("d1", 1), page_vectors=[_vectors(1)], fingerprint=FINGERPRINT)
    moved = {**FINGERPRINT, "model": "/models/colpali-copy", "revision": None}
    store.add(_doc("d2", 1), page_vectors=[_vectors(2)], fingerprint=moved)
    assert store.doc_ids() == ["d1", "d2"]
    finetuned = {**FINGERPRINT, "weights_digest": "ffffffffffffffff"}
    with pytest.raises(ModelMismatchError):
        store.add(_doc("d3", 1), page_vectors=[_vectors(3)], fingerprint=finetuned)
    assert store.fingerprint == FINGERPRINT  # the first fingerprint stays the table's


def test_pool_factor_is_recorded_and_checked_on_writes_only(store):
    assert store.pool_factor == 1  # a new store
    pooled = {**FINGERPRINT, "pool_factor": 3}
    store.add(_doc("d1", 1), page_vectors=[_vectors(1, n_vectors=4)], fingerprint=pooled)
    assert store.pool_factor == 3
    version = store.version
    for other in (1, 2, None):
        with pytest.raises(ModelMismatchError, match="pool_factor=3"):
            store.add(
                _doc("d2", 1),
                page_vectors=[_vectors(2)],
                fingerprint={**FINGERPRINT, "pool_factor": other},
            )
    assert store.version == version
    # A query's fingerprint is the encoder's, without a pool factor: same vector space.
    store.check_fingerprint(FINGERPRINT, DIM)
    store.add(_doc("d3", 1), page_vectors=[_vectors(3, n_vectors=4)], fingerprint=pooled)
    assert store.doc_ids() == ["d1", "d3"]


def test_dimension_mismatch_raises(store):
    store.add(_doc("d1", 1), page_vectors=[_vectors(1)])
    version = store.version
    with pytest.raises(ModelMismatchError, match="16-dimensional"):
        store.add(_doc("d2", 1), page_vectors=[_vectors(2, dim=32)])
    with pytest.raises(ModelMismatchError, match="mixes vectors of dimensions"):
        store.add(_doc("d3", 2), page_vectors=[_vectors(3), _vectors(4, dim=8)])
    with pytest.raises(ModelMismatchError, match="embedding_dim"):
        store.add(_doc("d4", 1), page_vectors=[_vectors(5)], fingerprint={"embedding_dim": 128})
    assert store.version == version
    assert store.doc_ids() == ["d1"]


def test_table_without_fingerprint_adopts_the_first_one(store):
    store.add(_doc("d1", 1), page_vectors=[_vectors(1)])
    assert store.fingerprint is None
    store.add(_doc("d2", 1), page_vectors=[_vectors(2)], fingerprint=FINGERPRINT)
    assert store.fingerprint == FINGERPRINT
    with pytest.raises(ModelMismatchError):
        store.add(_doc("d3", 1), page_vectors=[_vectors(3)], fingerprint=OTHER_FINGERPRINT)


def test_reopen_from_another_instance(tmp_path):
    uri = str(tmp_path / "index")
    writer = LanceDBPageStore(uri=uri)
    writer.add(_doc("d1", 2), page_vectors=[_vectors(1), _vectors(2)], fingerprint=FINGERPRINT)
    reader = LanceDBPageStore(uri=uri)
    assert reader.fingerprint == FINGERPRINT
    assert reader.count() == 2
    assert reader.version == writer.version
    # Commits of another instance are seen at once (read_consistency_interval=0).
    writer.add(_doc("d2", 1), page_vectors=[_vectors(3)], fingerprint=FINGERPRINT)
    assert reader.version == writer.version
    assert reader.doc_ids() == ["d1", "d2"]
    with pytest.raises(ModelMismatchError):
        reader.add(_doc("d3", 1), page_vectors=[_vectors(4)], fingerprint=OTHER_FINGERPRINT)


def test_concurrent_writers_do_not_duplicate_pages(tmp_path):
    """Two stores (think two processes) adding the same new pages at once: each page once."""
    uri = str(tmp_path / "index")
    LanceDBPageStore(uri=uri).add(_doc("seed", 1), page_vectors=[_vectors(0)])
    pages = [_doc(f"doc{i}", 1) for i in range(12)]
    barrier = threading.Barrier(3)
    errors = []

    def ingest(order):
        store = LanceDBPageStore(uri=uri)
        barrier.wait()
        try:
            for doc in order:
                store.add(doc, page_vectors=_vectors_for(doc))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    # Three writers in the same order race on every page.
    threads = [threading.Thread(target=ingest, args=(pages,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    store = LanceDBPageStore(uri=uri)
    ids = [i for batch, _ in store.iter_page_vectors() for i in batch]
    assert len(ids) == len(set(ids)) == 1 + 12


def test_foreign_table_is_refused_not_overwritten(tmp_path):
    uri = str(tmp_path / "index")
    lancedb.connect(uri).create_table("pages", data=pa.table({"x": [1, 2]}))
    with pytest.raises(StoreError, match="not a llama-index-vlm page table"):
        LanceDBPageStore(uri=uri)
    assert lancedb.connect(uri).open_table("pages").count_rows() == 2


def test_to_dict_from_dict_round_trip(tmp_path):
    store = LanceDBPageStore(
        uri=str(tmp_path / "index"),
        table_name="t",
        vector_dtype="float32",
        read_consistency_interval=None,
    )
    store.add(_doc("d1", 1), page_vectors=[_vectors(1)])
    data = store.to_dict()
    assert data["class_name"] == "LanceDBPageStore" == LanceDBPageStore.class_name()
    assert data["uri"] == str(tmp_path / "index") and data["table_name"] == "t"
    assert "_table" not in data and "_connection" not in data
    copy = LanceDBPageStore.from_dict(data)
    assert copy.to_dict() == data
    assert copy.count() == 1 and copy.vector_dtype == "float32"
    assert copy.client is not None and copy.stores_text and not copy.flat_metadata


# ---------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (None, "needs page_vectors"),
        ([], "1 nodes but 0"),
        ([np.zeros(DIM)], "non-empty \\(n_vectors, dim\\)"),
        ([np.zeros((0, DIM))], "non-empty"),
        ([np.full((2, DIM), np.nan)], "NaN"),
        ([np.full((2, DIM), 1e6)], "too large for float16"),
        ([np.array([["a"] * DIM])], "must be numbers"),
    ],
)
def test_bad_vectors_raise_and_write_nothing(store, vectors, message):
    with pytest.raises(ValueError, match=message):
        store.add([_page("d1", 1)], page_vectors=vectors)
    assert store.version == 0 and store.count() == 0


def test_bad_nodes_raise(store):
    with pytest.raises(ValueError, match="has no image"):
        store.add([TextNode(id_="t-p1", text="no image")], page_vectors=[_vectors(1)])
    bad_number = _page("d1", 5, 3)
    with pytest.raises(ValueError, match="page_number=5 is not in 1..3"):
        store.add([bad_number], page_vectors=[_vectors(1)])
    wrong_id = _page("d1", 1)
    wrong_id.metadata["page_id"] = "other"
    with pytest.raises(ValueError, match="page id must be the node id"):
        store.add([wrong_id], page_vectors=[_vectors(1)])
    two_versions = [_page("v1", 1, file_path="/f.pdf"), _page("v2", 1, file_path="/f.pdf")]
    with pytest.raises(ValueError, match="two doc_ids"):
        store.add(two_versions, page_vectors=[_vectors(1), _vectors(2)])
    assert store.count() == 0


# ---------------------------------------------------------------------- deleting and reading


def _filled(store) -> LanceDBPageStore:
    for index, doc_id in enumerate(["a", "b", "c"]):
        pages = _doc(doc_id, 3, topic="tax" if doc_id != "c" else "law", rank=index)
        store.add(pages, page_vectors=_vectors_for(pages), fingerprint=FINGERPRINT)
    return store


def _where(key, value, operator="==") -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])


def test_delete_delete_nodes_get_nodes_clear(store):
    _filled(store)
    assert store.count() == 9
    assert store.count(_where("topic", "law")) == 3
    assert _ids(store.get_nodes(filters=_where("page_number", 2, ">="))) == [
        "a-p2", "a-p3", "b-p2", "b-p3", "c-p2", "c-p3",
    ]  # fmt: skip
    assert _ids(store.get_nodes(["a-p1", "b-p1"], filters=_where("doc_id", "b"))) == ["b-p1"]

    store.delete("a")
    assert store.doc_ids() == ["b", "c"]
    version = store.version
    store.delete("a")  # nothing left: no new version
    store.delete("x' OR '1'='1")
    assert store.version == version

    store.delete_nodes(["b-p1", "missing"])
    assert _ids(store.get_nodes(filters=_where("doc_id", "b"))) == ["b-p2", "b-p3"]
    store.delete_nodes(filters=_where("topic", "law"))
    assert store.doc_ids() == ["b"]
    store.delete_nodes(["b-p2", "b-p3"], filters=_where("page_number", 3))
    assert _ids(store.get_nodes()) == ["b-p2"]
    store.delete_nodes([])
    with pytest.raises(ValueError, match="use clear"):
        store.delete_nodes()

    store.clear()
    assert store.count() == 0
    assert store.fingerprint == FINGERPRINT  # clear keeps the table and its fingerprint


def test_async_variants(store):
    async def scenario():
        pages = _doc("a", 3)
        ids = await store.async_add(
            pages, page_vectors=_vectors_for(pages), fingerprint=FINGERPRINT
        )
        assert ids == ["a-p1", "a-p2", "a-p3"]
        result = await store.aupsert_pages(_doc("b", 2), _vectors_for(_doc("b", 2)))
        assert result.added == ["b-p1", "b-p2"]
        # The event loop keeps running while the store works in a thread.
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        nodes = await store.aget_nodes(["a-p2"])
        task.cancel()
        assert [node.node_id for node in nodes] == ["a-p2"] and ticks > 0
        query = VectorStoreQuery(
            query_embedding=_vectors_for(pages)[0].tolist(), similarity_top_k=1
        )
        assert (await store.aquery(query)).ids == ["a-p1"]
        await store.adelete_nodes(["a-p1"])
        await store.adelete("b")
        assert _ids(await store.aget_nodes()) == ["a-p2", "a-p3"]
        await store.aclear()
        assert await store.aget_nodes() == []

    asyncio.run(scenario())


def test_native_multivector_query_scores_are_maxsim(store):
    _filled(store)
    query_vectors = _vectors(999, n_vectors=4)
    result = store.query(
        VectorStoreQuery(query_embedding=query_vectors.tolist(), similarity_top_k=4)
    )
    assert len(result.ids) == 4
    all_ids = [f"{d}-p{n}" for d in "abc" for n in (1, 2, 3)]
    stored = dict(zip(all_ids, store.get_page_vectors(all_ids), strict=True))
    maxsim = {
        page_id: float((query_vectors @ vectors.astype(np.float32).T).max(axis=1).sum())
        for page_id, vectors in stored.items()
    }
    best = sorted(maxsim, key=maxsim.get, reverse=True)[:4]
    assert result.ids == best
    np.testing.assert_allclose(result.similarities, [maxsim[i] for i in best], atol=2e-3)
    assert [node.node_id for node in result.nodes] == best
    assert all(isinstance(node, ImageNode) and node.image for node in result.nodes)

    filtered = store.query(
        VectorStoreQuery(
            query_embedding=query_vectors.tolist(),
            similarity_top_k=9,
            filters=_where("topic", "law"),
        )
    )
    assert sorted(filtered.ids) == ["c-p1", "c-p2", "c-p3"]
    by_doc = store.query(
        VectorStoreQuery(
            query_embedding=query_vectors[0].tolist(), similarity_top_k=9, doc_ids=["b"]
        )
    )
    assert sorted(by_doc.ids) == ["b-p1", "b-p2", "b-p3"]
    with pytest.raises(ModelMismatchError):
        store.query(VectorStoreQuery(query_embedding=[[1.0] * 3]))
    with pytest.raises(ValueError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="text only"))


def test_iter_page_vectors_batches_and_snapshots(store):
    _filled(store)
    version = store.version
    batches = list(store.iter_page_vectors(batch_size=4))
    assert all(len(ids) <= 4 for ids, _ in batches)
    seen = {
        page_id: array
        for ids, arrays in batches
        for page_id, array in zip(ids, arrays, strict=True)
    }
    assert sorted(seen) == sorted(f"{d}-p{n}" for d in "abc" for n in (1, 2, 3))
    expected = store.get_page_vectors(list(seen))
    for (page_id, array), other in zip(seen.items(), expected, strict=True):
        np.testing.assert_array_equal(array, other, err_msg=page_id)
    filtered = list(store.iter_page_vectors(filters=_where("topic", "law"), dtype=np.float32))
    assert sorted(i for ids, _ in filtered for i in ids) == ["c-p1", "c-p2", "c-p3"]
    assert all(a.dtype == np.float32 for _, arrays in filtered for a in arrays)
    # A retriever can read the version it cached, even after later writes.
    store.delete("a")
    assert store.version > version
    old = [i for ids, _ in store.iter_page_vectors(version=version) for i in ids]
    assert len(old) == 9
    assert store.get_page_vectors(["a-p1"], version=version)[0].shape[1] == DIM
    with pytest.raises(KeyError, match="a-p1"):
        store.get_page_vectors(["a-p1", "b-p1"])


def test_page_ids_and_hashes_for_cache_refresh(store):
    assert store.page_ids() == [] and store.page_hashes() == {}
    _filled(store)
    version = store.version
    hashes = store.page_hashes()
    assert (
        sorted(hashes)
        == sorted(store.page_ids())
        == [f"{d}-p{n}" for d in "abc" for n in (1, 2, 3)]
    )
    assert hashes == store.page_hashes(page_ids=list(hashes))
    assert sorted(store.page_ids(filters=_where("topic", "law"))) == ["c-p1", "c-p2", "c-p3"]
    store.add([_page("a", 1, text="changed")], page_vectors=[_vectors(7)])
    store.delete("b")
    now = store.page_hashes()
    changed = {p for p, h in now.items() if hashes.get(p) != h}
    assert changed == {"a-p1"}
    assert set(hashes) - set(now) == {"b-p1", "b-p2", "b-p3"}
    assert store.page_hashes(version=version) == hashes
    assert len(store.page_ids(version=version)) == 9


# ---------------------------------------------------------------------- SIGKILL mid-ingest

# The writer run in a subprocess. Its page generator is also loaded by the test (runpy), so
# both sides agree on what every page must contain.
WRITER = r'''
import base64, io, sys, zlib
import numpy as np
from PIL import Image

N_VECTORS, DIM = 1030, 128
# Small batches give many commits to kill between; big ones a long write to kill inside.
BATCH = {"v1": 6, "v2": 40}
FINGERPRINT = {"model": "test-colpali", "embedding_dim": DIM}


def file_plan(phase):
    """(file, doc_id, page_count) per file of an ingest run."""
    if phase == "v1":
        return [(f"/docs/f{i}.pdf", f"f{i}-v1", 8) for i in range(4)]
    # v2: f1 changed (fewer pages), f2 unchanged, f4 and f5 new.
    return [
        ("/docs/f1.pdf", "f1-v2", 6),
        ("/docs/f2.pdf", "f2-v1", 8),
        ("/docs/f4.pdf", "f4-v2", 8),
        ("/docs/f5.pdf", "f5-v2", 60),
    ]


def page_ids(phase):
    return [f"{doc}-p{n}" for _, doc, count in file_plan(phase) for n in range(1, count + 1)]


def page_image(page_id):
    rng = np.random.default_rng(zlib.crc32(page_id.encode()))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def page_vectors(page_id):
    rng = np.random.default_rng(zlib.crc32(page_id.encode()) + 1)
    count = N_VECTORS - int(rng.integers(0, 30))
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def batches(phase):
    from llama_index.core.schema import ImageDocument

    pages = []
    for path, doc, count in file_plan(phase):
        for n in range(1, count + 1):
            page_id = f"{doc}-p{n}"
            pages.append(ImageDocument(
                id_=page_id, image=base64.b64encode(page_image(page_id)).decode(),
                image_mimetype="image/png", text=page_id,
                metadata={"doc_id": doc, "page_id": page_id, "file_path": path,
                          "file_name": path.rsplit("/", 1)[-1], "page_number": n,
                          "page_count": count},
            ))
    size = BATCH[phase]
    return [pages[i:i + size] for i in range(0, len(pages), size)]


if __name__ == "__main__":
    from llama_index_vlm.store import LanceDBPageStore

    uri, phase = sys.argv[1], sys.argv[2]
    store = LanceDBPageStore(uri=uri)
    # Everything is prepared before "ready", so that after it the writer is almost always
    # inside store.add, where a kill is meant to land.
    work = [(batch, [page_vectors(p.node_id) for p in batch]) for batch in batches(phase)]
    print("ready", flush=True)
    for index, (batch, vectors) in enumerate(work):
        store.add(batch, page_vectors=vectors, fingerprint=FINGERPRINT)
        print("committed", index, flush=True)
    print("done", flush=True)
'''


def _run_writer(script: Path, uri: str, phase: str, kill: tuple[int, float] | None) -> list[str]:
    """Run the writer to the end, or SIGKILL it ``kill = (n, delay)``: ``delay`` seconds after
    its n-th commit (n=0: after start-up), i.e. in the middle of the next add. Returns its
    output lines.
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, str(script), uri, phase],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = [process.stdout.readline().strip()]
        assert lines == ["ready"], lines
        if kill is None:
            lines += process.stdout.read().split()
            assert process.wait(timeout=120) == 0
            assert lines[-1] == "done", lines
            return lines
        commits, delay = kill
        while sum(line.startswith("committed") for line in lines) < commits:
            line = process.stdout.readline()
            assert line, f"the writer stopped early: {lines}"
            lines.append(line.strip())
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        lines += process.stdout.read().splitlines()
        process.wait(timeout=30)
        return [line for line in lines if line]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _check_whole_pages(uri: str, writer: dict) -> set[str]:
    """Every visible page is whole and unique; returns the visible page ids."""
    store = LanceDBPageStore(uri=uri)
    if store.count() == 0:
        return set()
    visible = [i for ids, _ in store.iter_page_vectors(batch_size=16) for i in ids]
    assert len(visible) == len(set(visible)) == store.count(), "a page_id is duplicated"
    for node in store.get_nodes(visible):
        page_id = node.node_id
        vectors = store.get_page_vectors([page_id])[0]
        expected = writer["page_vectors"](page_id)
        assert vectors.shape == expected.shape, page_id
        np.testing.assert_allclose(vectors.astype(np.float32), expected, atol=1e-3, err_msg=page_id)
        assert base64.b64decode(node.image) == writer["page_image"](page_id)
        assert decode_image(node.image).size == (48, 64)
        assert node.text == page_id
    lengths = {i: len(v) for i, v in zip(visible, store.get_page_vectors(visible), strict=True)}
    for page_id, count in store.vector_counts().items():
        assert lengths[page_id] == count, page_id
    return set(visible)


def _states(initial: set[str], batches: list[list[str]]) -> list[set[str]]:
    """The page set after each prefix of ``batches``: what the store may show after a kill.

    A batch adds its pages and drops the pages of older versions of the same files (page ids
    are ``f"{file}-{version}-p{n}"`` here).
    """
    states = [set(initial)]
    for batch in batches:
        state = set(states[-1])
        for page_id in batch:
            doc_id = page_id.rsplit("-p", 1)[0]
            file = doc_id.split("-")[0]
            state -= {
                p for p in state if p.split("-")[0] == file and not p.startswith(doc_id + "-p")
            }
        states.append(state | set(batch))
    return states


def _batches_shown(visible: set[str], states: list[set[str]], context) -> list[int]:
    """Which prefixes of the batches the store may be showing (batches of unchanged pages
    leave the same state); fails if none (a partial batch is visible).
    """
    shown = [count for count, state in enumerate(states) if visible == state]
    assert shown, f"visible pages are not whole batches ({context}): {sorted(visible)}"
    return shown


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_whole_pages_and_rerun_completes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = runpy.run_path(str(script))
    uri = str(tmp_path / "index")
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)

    # Each phase is killed at a random moment (mostly inside an add: once ready, the writer
    # does little else), checked, then re-run to completion. Phase 2 re-ingests with a changed
    # file (fewer pages, new doc_id), an unchanged one and a new one.
    before: set[str] = set()
    for phase, kills, final in [
        ("v1", 2, set(writer["page_ids"]("v1"))),
        (
            "v2",
            1,
            set(writer["page_ids"]("v2"))
            | {p for p in writer["page_ids"]("v1") if p[:2] in ("f0", "f3")},
        ),
    ]:
        batches = [[p.node_id for p in batch] for batch in writer["batches"](phase)]
        states = _states(before, batches)
        assert states[-1] == final
        previous = 0
        for _ in range(kills):
            kill = (rng.randrange(len(batches)), rng.uniform(0.0, 0.05 * len(batches[0]) / 6))
            lines = _run_writer(script, uri, phase, kill)
            committed = sum(line.startswith("committed") for line in lines)
            context = (seed, phase, kill, lines)
            shown = _batches_shown(_check_whole_pages(uri, writer), states, context)
            # A re-run skips the batches already stored; a commit is durable before the writer
            # prints it, so at most one more batch than printed is visible.
            possible = [n for n in shown if committed <= n <= max(committed + 1, previous)]
            assert possible, (shown, context)
            previous = max(possible)
        _run_writer(script, uri, phase, kill=None)
        assert _check_whole_pages(uri, writer) == final, (seed, phase)
        before = final

    # Re-running the finished ingest writes nothing.
    store = LanceDBPageStore(uri=uri)
    version = store.version
    for batch in writer["batches"]("v2"):
        vectors = [writer["page_vectors"](p.node_id) for p in batch]
        assert not store.upsert_pages(batch, vectors, fingerprint=writer["FINGERPRINT"]).written
    assert store.version == version
