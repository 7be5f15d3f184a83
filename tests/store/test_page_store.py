"""Tests of ``LanceDBPageStore``: round trips, idempotence, replacement, fingerprints, deletes,
async variants, native multi-vector search, and the reads a vector cache refreshes from.

A writer killed with SIGKILL mid-write is in tests/stress/test_kill_store.py.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pytest
from llama_index.core.schema import ImageNode, NodeRelationship, TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from page_documents import (
    DIM,
    IMAGE_SIZE,
    document_pages,
    encoded_noise,
    page_document,
    unit_vectors,
    vectors_for,
)
from PIL import Image

from llama_index_vlm.errors import (
    InvalidPageError,
    InvalidRequestError,
    ModelMismatchError,
    PageNotFoundError,
)
from llama_index_vlm.pages import page_content_hash
from llama_index_vlm.store import AddResult, LanceDBPageStore, StoredDocument
from llama_index_vlm.store import table as table_module
from llama_index_vlm.store.table import PageTable

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
ALL_PAGES = [f"{d}-p{n}" for d in "abc" for n in (1, 2, 3)]


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    return LanceDBPageStore(uri=str(tmp_path / "index"))


@pytest.fixture
def filled(store) -> LanceDBPageStore:
    """Documents a, b (topic "tax") and c (topic "law"), 3 pages each, with FINGERPRINT."""
    for index, doc_id in enumerate(["a", "b", "c"]):
        pages = document_pages(doc_id, 3, topic="tax" if doc_id != "c" else "law", rank=index)
        store.add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT)
    return store


def _ids(nodes) -> list[str]:
    return sorted(node.node_id for node in nodes)


def _where(key, value, operator="==") -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])


# ---------------------------------------------------------------------- a new store


def test_a_new_store_reads_as_empty(store):
    assert store.fingerprint is None
    assert store.dim is None
    assert store.schema is None
    assert store.version == 0
    assert store.count() == 0
    assert store.doc_ids() == []
    assert store.documents() == []
    assert store.get_nodes() == []
    assert list(store.iter_page_vectors()) == []
    assert store.query(VectorStoreQuery(query_embedding=[[1.0] * DIM])).ids == []


def test_deleting_from_a_new_store_creates_no_table(store):
    store.delete("nothing")
    store.clear()
    assert store.version == 0


def test_adding_no_pages_creates_no_table(store):
    assert store.add([], page_vectors=[]) == []
    assert store.version == 0


def test_importing_the_store_loads_no_model_library():
    code = (
        "import sys\n"
        "import llama_index_vlm.store\n"
        "heavy = ('torch', 'transformers')\n"
        "assert not [name for name in heavy if name in sys.modules], sys.modules.keys()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------- round trip


def test_pages_come_back_as_given_in_the_order_asked(store):
    pages = document_pages(
        "d1", 3, author="O'Neil", tags=["a", "b"], year=2023, nested={"k": [1, 2]}
    )
    pages[1] = page_document("d1", 2, 3, image_format="JPEG", author="x", year=1)
    assert store.add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT) == [
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
        assert Image.open(node.resolve_image()).size == IMAGE_SIZE


def test_float16_vectors_come_back_within_rounding(store):
    pages = document_pages("d1", 3)
    vectors = vectors_for(pages)
    store.add(pages, page_vectors=vectors, fingerprint=FINGERPRINT)
    stored = store.get_page_vectors(["d1-p2", "d1-p1", "d1-p3"])
    for page_id, array in zip(["d1-p2", "d1-p1", "d1-p3"], stored, strict=True):
        expected = vectors[[p.node_id for p in pages].index(page_id)]
        assert array.dtype == np.float16
        assert array.shape == expected.shape
        np.testing.assert_allclose(array.astype(np.float32), expected, atol=1e-3)


def test_the_store_describes_what_it_holds(store):
    pages = document_pages("d1", 3)
    store.add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT)
    assert store.fingerprint == FINGERPRINT
    assert store.dim == DIM
    assert store.count() == 3
    assert store.doc_ids() == ["d1"]


def test_page_hashes_are_the_content_hashes_of_the_pages(store):
    pages = document_pages("d1", 3)
    store.add(pages, page_vectors=vectors_for(pages))
    assert store.page_hashes(page_ids=["d1-p1"]) == {"d1-p1": page_content_hash(pages[0])}


def test_float32_store_is_exact(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"), vector_dtype="float32")
    pages = document_pages("d1", 2)
    vectors = vectors_for(pages)
    store.add(pages, page_vectors=vectors)
    for array, expected in zip(store.get_page_vectors(["d1-p1", "d1-p2"]), vectors, strict=True):
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, expected)


def test_vectors_are_read_in_the_dtype_asked(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"), vector_dtype="float32")
    pages = document_pages("d1", 2)
    store.add(pages, page_vectors=vectors_for(pages))
    assert store.get_page_vectors(["d1-p1"], dtype=np.float16)[0].dtype == np.float16


def test_a_page_given_by_image_path_is_stored_with_its_bytes(store, tmp_path):
    image_file = tmp_path / "scan.jpg"
    image_file.write_bytes(encoded_noise(5, image_format="JPEG"))
    node = ImageNode(id_="scan-p1", image_path=str(image_file), metadata={"doc_id": "scan"})
    store.add([node], page_vectors=[unit_vectors(5)])
    (stored,) = store.get_nodes(["scan-p1"])
    assert stored.image_mimetype == "image/jpeg"
    assert base64.b64decode(stored.image) == image_file.read_bytes()
    assert stored.metadata == {"doc_id": "scan", "page_id": "scan-p1"}


def test_a_page_without_mimetype_gets_the_one_its_bytes_show(store):
    bare = ImageNode(id_="bare-p1", image=base64.b64encode(encoded_noise(6)).decode())
    store.add([bare], page_vectors=[unit_vectors(6)])
    assert store.get_nodes(["bare-p1"])[0].image_mimetype == "image/png"


# ---------------------------------------------------------------------- idempotence


def test_readd_unchanged_writes_nothing(store):
    pages = document_pages("d1", 3)
    vectors = vectors_for(pages)
    first = store.upsert_pages(pages, vectors, fingerprint=FINGERPRINT)
    assert isinstance(first, AddResult)
    assert first.added == ["d1-p1", "d1-p2", "d1-p3"] and first.written
    version = store.version
    again = store.upsert_pages(pages, vectors, fingerprint=FINGERPRINT)
    assert again.unchanged == ["d1-p1", "d1-p2", "d1-p3"]
    assert again.added == again.replaced == again.removed == []
    assert not again.written
    assert store.version == version == again.version


def test_stored_hashes_recognise_unchanged_pages(store):
    pages = document_pages("d1", 3)
    store.add(pages, page_vectors=vectors_for(pages))
    stored = store.page_hashes(page_ids=[page.node_id for page in pages])
    unchanged = {page.node_id for page in pages if stored[page.node_id] == page_content_hash(page)}
    assert unchanged == {"d1-p1", "d1-p2", "d1-p3"}


def test_a_page_given_twice_in_one_call_is_stored_once(store):
    page = page_document("d1", 1)
    vectors = [unit_vectors(1), unit_vectors(1)]
    assert store.add([page, page], page_vectors=vectors) == ["d1-p1"] * 2
    assert store.count() == 1


def test_a_page_given_twice_with_different_content_is_refused(store):
    page, changed = page_document("d1", 1), page_document("d1", 1, text="other")
    with pytest.raises(InvalidPageError, match="twice with different content"):
        store.add([page, changed], page_vectors=[unit_vectors(1), unit_vectors(1)])


def _replace_two_of_three(store) -> tuple[AddResult, int, list[np.ndarray], list[np.ndarray]]:
    """Store d1 (tag "old"), then give it again with page 2's metadata and page 3's text
    changed: ``(result, the version before, the first vectors, the second vectors)``.
    """
    pages = document_pages("d1", 3, tag="old")
    old_vectors = vectors_for(pages)
    store.add(pages, page_vectors=old_vectors)
    version = store.version
    changed = [
        page_document("d1", 1, 3, tag="old"),  # unchanged
        page_document("d1", 2, 3, tag="new"),  # metadata changed
        page_document("d1", 3, 3, tag="old", text="new text"),  # text changed
    ]
    new_vectors = [unit_vectors(100 + i) for i in range(3)]
    return store.upsert_pages(changed, new_vectors), version, old_vectors, new_vectors


def test_changed_pages_are_replaced_in_one_commit(store):
    result, version, _, new_vectors = _replace_two_of_three(store)
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


def test_an_unchanged_page_keeps_its_original_vectors(store):
    _, _, old_vectors, _ = _replace_two_of_three(store)
    np.testing.assert_allclose(
        store.get_page_vectors(["d1-p1"])[0].astype(np.float32), old_vectors[0], atol=1e-3
    )


def test_changed_file_replaces_its_old_pages_in_one_commit(store):
    store.add(
        document_pages("old", 4, file_path="/docs/report.pdf"),
        page_vectors=[unit_vectors(i) for i in range(4)],
    )
    store.add(document_pages("other", 2), page_vectors=[unit_vectors(i) for i in range(2)])
    version = store.version
    new_pages = document_pages("new", 3, file_path="/docs/report.pdf")
    # The new version arrives in two add calls, as an ingestion pipeline would send it.
    first = store.upsert_pages(new_pages[:2], [unit_vectors(10), unit_vectors(11)])
    assert first.added == ["new-p1", "new-p2"]
    assert sorted(first.removed) == ["old-p1", "old-p2", "old-p3", "old-p4"]
    assert store.version == version + 1
    second = store.upsert_pages(new_pages[2:], [unit_vectors(12)])
    assert second.added == ["new-p3"] and second.removed == []
    assert store.doc_ids() == ["new", "other"]
    assert _ids(store.get_nodes()) == ["new-p1", "new-p2", "new-p3", "other-p1", "other-p2"]


def test_document_with_fewer_pages_drops_the_extra_pages(store):
    store.add(
        document_pages("manual", 4, file_path="/m.pdf"),
        page_vectors=[unit_vectors(i) for i in range(4)],
    )
    shorter = [page_document("manual", n, 2, file_path="/m.pdf", text="v2") for n in (1, 2)]
    result = store.upsert_pages(shorter, [unit_vectors(20), unit_vectors(21)])
    assert result.replaced == ["manual-p1", "manual-p2"]
    assert sorted(result.removed) == ["manual-p3", "manual-p4"]
    assert _ids(store.get_nodes()) == ["manual-p1", "manual-p2"]


def test_same_bytes_at_two_paths_are_stored_once_and_stay_idempotent(store):
    first = document_pages("same", 2, file_path="/a/x.pdf")
    second = document_pages("same", 2, file_path="/b/x.pdf")
    store.add(first, page_vectors=vectors_for(first))
    version = store.version
    result = store.upsert_pages(second, vectors_for(second))
    assert result.unchanged == ["same-p1", "same-p2"]
    assert store.version == version


# ---------------------------------------------------------------------- fingerprints


def test_vectors_of_another_encoder_are_refused_and_nothing_is_written(store):
    store.add(
        document_pages("d1", 2),
        page_vectors=[unit_vectors(1), unit_vectors(2)],
        fingerprint=FINGERPRINT,
    )
    version = store.version
    with pytest.raises(ModelMismatchError) as raised:
        store.add(
            document_pages("d2", 2),
            page_vectors=[unit_vectors(3), unit_vectors(4)],
            fingerprint=OTHER_FINGERPRINT,
        )
    message = str(raised.value)
    assert "colpali-v1.3-hf" in message and "colqwen2-v1.0-hf" in message
    assert store.version == version
    assert store.doc_ids() == ["d1"]


def test_check_fingerprint_refuses_another_encoder(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    with pytest.raises(ModelMismatchError):
        store.check_fingerprint(OTHER_FINGERPRINT)


def test_check_fingerprint_ignores_key_order(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    store.check_fingerprint(dict(reversed(list(FINGERPRINT.items()))))
    assert store.fingerprint == FINGERPRINT


def test_the_same_model_from_another_path_is_accepted(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    moved = {**FINGERPRINT, "model": "/models/colpali-copy", "revision": None}
    store.add(document_pages("d2", 1), page_vectors=[unit_vectors(2)], fingerprint=moved)
    assert store.doc_ids() == ["d1", "d2"]
    assert store.fingerprint == FINGERPRINT  # the first fingerprint stays the table's


def test_another_finetune_of_the_same_model_is_refused(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    finetuned = {**FINGERPRINT, "weights_digest": "ffffffffffffffff"}
    with pytest.raises(ModelMismatchError):
        store.add(document_pages("d3", 1), page_vectors=[unit_vectors(3)], fingerprint=finetuned)
    assert store.fingerprint == FINGERPRINT


POOLED = {**FINGERPRINT, "pool_factor": 3}


def test_pool_factor_is_recorded_with_the_first_pages(store):
    assert store.pool_factor == 1  # a new store
    store.add(
        document_pages("d1", 1), page_vectors=[unit_vectors(1, n_vectors=4)], fingerprint=POOLED
    )
    assert store.pool_factor == 3


@pytest.mark.parametrize("other", [1, 2, None])
def test_pages_pooled_by_another_factor_are_refused(store, other):
    store.add(
        document_pages("d1", 1), page_vectors=[unit_vectors(1, n_vectors=4)], fingerprint=POOLED
    )
    version = store.version
    with pytest.raises(ModelMismatchError, match="pool_factor=3"):
        store.add(
            document_pages("d2", 1),
            page_vectors=[unit_vectors(2)],
            fingerprint={**FINGERPRINT, "pool_factor": other},
        )
    assert store.version == version


def test_pool_factor_is_checked_on_writes_only(store):
    store.add(
        document_pages("d1", 1), page_vectors=[unit_vectors(1, n_vectors=4)], fingerprint=POOLED
    )
    # A query's fingerprint is the encoder's, without a pool factor: same vector space.
    store.check_fingerprint(FINGERPRINT, DIM)
    store.add(
        document_pages("d3", 1), page_vectors=[unit_vectors(3, n_vectors=4)], fingerprint=POOLED
    )
    assert store.doc_ids() == ["d1", "d3"]


def test_vectors_of_another_dimension_are_refused(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)])
    version = store.version
    with pytest.raises(ModelMismatchError, match="16-dimensional"):
        store.add(document_pages("d2", 1), page_vectors=[unit_vectors(2, dim=32)])
    assert store.version == version
    assert store.doc_ids() == ["d1"]


def test_one_call_mixing_dimensions_is_refused(store):
    with pytest.raises(ModelMismatchError, match="mixes vectors of dimensions"):
        store.add(document_pages("d3", 2), page_vectors=[unit_vectors(3), unit_vectors(4, dim=8)])
    assert store.version == 0


def test_vectors_that_contradict_their_fingerprint_are_refused(store):
    with pytest.raises(ModelMismatchError, match="embedding_dim"):
        store.add(
            document_pages("d4", 1),
            page_vectors=[unit_vectors(5)],
            fingerprint={"embedding_dim": 128},
        )
    assert store.version == 0


def test_table_without_fingerprint_adopts_the_first_one(store):
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)])
    assert store.fingerprint is None
    store.add(document_pages("d2", 1), page_vectors=[unit_vectors(2)], fingerprint=FINGERPRINT)
    assert store.fingerprint == FINGERPRINT
    with pytest.raises(ModelMismatchError):
        store.add(
            document_pages("d3", 1), page_vectors=[unit_vectors(3)], fingerprint=OTHER_FINGERPRINT
        )


# ---------------------------------------------------------------------- several instances


@pytest.fixture
def writer_and_reader(tmp_path) -> tuple[LanceDBPageStore, LanceDBPageStore]:
    """Two instances on one table; the writer added d1 (2 pages) before the reader opened."""
    uri = str(tmp_path / "index")
    writer = LanceDBPageStore(uri=uri)
    writer.add(
        document_pages("d1", 2),
        page_vectors=[unit_vectors(1), unit_vectors(2)],
        fingerprint=FINGERPRINT,
    )
    return writer, LanceDBPageStore(uri=uri)


def test_another_instance_opens_what_was_written(writer_and_reader):
    writer, reader = writer_and_reader
    assert reader.fingerprint == FINGERPRINT
    assert reader.count() == 2
    assert reader.version == writer.version


def test_another_instance_sees_new_commits_at_once(writer_and_reader):
    writer, reader = writer_and_reader
    # read_consistency_interval=0: every read checks for the latest version.
    writer.add(document_pages("d2", 1), page_vectors=[unit_vectors(3)], fingerprint=FINGERPRINT)
    assert reader.version == writer.version
    assert reader.doc_ids() == ["d1", "d2"]


@pytest.fixture
def lancedb_version_reads(monkeypatch):
    """Counts reads of LanceDB's ``Table.version`` (each loads the latest manifest)."""
    import lancedb.table

    calls = []
    real = lancedb.table.LanceTable.version

    def counted(table):
        calls.append(table)
        return real.fget(table)

    monkeypatch.setattr(lancedb.table.LanceTable, "version", property(counted))
    return calls


def test_the_latest_version_is_listed_without_loading_lancedbs_manifest(
    writer_and_reader, lancedb_version_reads
):
    writer, reader = writer_and_reader
    before = reader.version
    writer.add(document_pages("d2", 1), page_vectors=[unit_vectors(3)], fingerprint=FINGERPRINT)
    lancedb_version_reads.clear()
    assert reader.version == before + 1
    writer.delete("d1")  # and the compaction after it
    listed = reader.version
    assert lancedb_version_reads == []  # listed from the Lance dataset
    assert listed == writer._pages.open().version > before + 1  # what LanceDB reads
    assert reader.doc_ids() == ["d2"]  # and the reads that follow see that version


def test_the_version_of_an_emptied_table_is_listed_too(tmp_path, lancedb_version_reads):
    uri = str(tmp_path / "index")
    writer = LanceDBPageStore(uri=uri)
    writer.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    writer.clear()
    reader = LanceDBPageStore(uri=uri)
    assert reader.count() == 0
    emptied = reader.version  # the dataset it lists versions from opens on no rows
    writer.add(document_pages("d2", 1), page_vectors=[unit_vectors(2)], fingerprint=FINGERPRINT)
    lancedb_version_reads.clear()
    listed = reader.version
    assert lancedb_version_reads == []
    assert listed == writer._pages.open().version > emptied


def test_a_store_that_never_checks_keeps_its_own_version(tmp_path, lancedb_version_reads):
    uri = str(tmp_path / "index")
    writer = LanceDBPageStore(uri=uri)
    writer.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)], fingerprint=FINGERPRINT)
    reader = LanceDBPageStore(uri=uri, read_consistency_interval=None)
    seen = reader.version
    writer.add(document_pages("d2", 1), page_vectors=[unit_vectors(2)], fingerprint=FINGERPRINT)
    assert reader.version == seen < writer.version  # LanceDB's handle, as configured
    assert lancedb_version_reads  # LanceDB answered, not the dataset's listing
    reader.refresh()
    assert reader.version == writer.version


@pytest.mark.parametrize("failure", ["no dataset", "listing fails"])
def test_the_version_falls_back_to_lancedb(writer_and_reader, monkeypatch, failure):
    class FailingListing:
        @property
        def latest_version(self):
            raise OSError("listing failed")

    replacement = None if failure == "no dataset" else FailingListing()
    monkeypatch.setattr(table_module, "lance_dataset", lambda table: replacement)
    writer, reader = writer_and_reader
    writer.add(document_pages("d2", 1), page_vectors=[unit_vectors(3)], fingerprint=FINGERPRINT)
    assert reader.version == writer.version == LanceDBPageStore(uri=writer.uri).version


def test_another_instance_refuses_another_encoder(writer_and_reader):
    _, reader = writer_and_reader
    with pytest.raises(ModelMismatchError):
        reader.add(
            document_pages("d3", 1), page_vectors=[unit_vectors(4)], fingerprint=OTHER_FINGERPRINT
        )


def test_concurrent_writers_do_not_duplicate_pages(tmp_path):
    """Two stores (think two processes) adding the same new pages at once: each page once."""
    uri = str(tmp_path / "index")
    LanceDBPageStore(uri=uri).add(document_pages("seed", 1), page_vectors=[unit_vectors(0)])
    pages = [document_pages(f"doc{i}", 1) for i in range(12)]
    barrier = threading.Barrier(3)
    errors = []

    def ingest(order):
        store = LanceDBPageStore(uri=uri)
        barrier.wait()
        try:
            for doc in order:
                store.add(doc, page_vectors=vectors_for(doc))
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


def test_to_dict_from_dict_round_trip(tmp_path):
    store = LanceDBPageStore(
        uri=str(tmp_path / "index"),
        table_name="t",
        vector_dtype="float32",
        read_consistency_interval=None,
    )
    store.add(document_pages("d1", 1), page_vectors=[unit_vectors(1)])
    data = store.to_dict()
    assert data["class_name"] == "LanceDBPageStore" == LanceDBPageStore.class_name()
    assert data["uri"] == str(tmp_path / "index") and data["table_name"] == "t"
    assert "_table" not in data and "_pages" not in data and "_connection" not in data
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
    with pytest.raises(InvalidPageError, match=message):
        store.add([page_document("d1", 1)], page_vectors=vectors)
    assert store.version == 0 and store.count() == 0


def _page_numbered_beyond_its_count():
    return page_document("d1", 5, 3)


def _page_whose_page_id_is_not_its_id():
    page = page_document("d1", 1)
    page.metadata["page_id"] = "other"
    return page


@pytest.mark.parametrize(
    ("make_pages", "message"),
    [
        (lambda: [TextNode(id_="t-p1", text="no image")], "has no image"),
        (lambda: [_page_numbered_beyond_its_count()], "page_number=5 is not in 1..3"),
        (lambda: [_page_whose_page_id_is_not_its_id()], "page id must be the node id"),
        (
            lambda: [
                page_document("v1", 1, file_path="/f.pdf"),
                page_document("v2", 1, file_path="/f.pdf"),
            ],
            "two doc_ids",
        ),
    ],
    ids=["no-image", "page-number", "page-id", "two-versions-of-a-file"],
)
def test_bad_pages_raise_and_write_nothing(store, make_pages, message):
    pages = make_pages()
    with pytest.raises(InvalidPageError, match=message):
        store.add(pages, page_vectors=[unit_vectors(i) for i in range(len(pages))])
    assert store.count() == 0


def test_page_errors_are_value_errors():
    assert issubclass(InvalidPageError, ValueError)


# ---------------------------------------------------------------------- reading


def test_count_honours_filters(filled):
    assert filled.count() == 9
    assert filled.count(_where("topic", "law")) == 3


def test_get_nodes_honours_filters(filled):
    assert _ids(filled.get_nodes(filters=_where("page_number", 2, ">="))) == [
        "a-p2", "a-p3", "b-p2", "b-p3", "c-p2", "c-p3",
    ]  # fmt: skip


def test_get_nodes_with_ids_and_filters_needs_both(filled):
    assert _ids(filled.get_nodes(["a-p1", "b-p1"], filters=_where("doc_id", "b"))) == ["b-p1"]


def test_documents_lists_each_document_with_its_pages(filled):
    filled.delete_nodes(["b-p3"])
    assert filled.documents() == [
        StoredDocument("a", "a.pdf", "/docs/a.pdf", 3, 3),
        StoredDocument("b", "b.pdf", "/docs/b.pdf", 3, 2),
        StoredDocument("c", "c.pdf", "/docs/c.pdf", 3, 3),
    ]


def test_metadata_keys_are_the_users_own_keys_without_page_fields(filled):
    assert filled.metadata_keys() == ["rank", "topic"]


def test_metadata_keys_of_an_empty_store_are_none(store):
    assert store.metadata_keys() == []


def test_vector_counts_are_the_stored_rows(filled):
    counts = filled.vector_counts()
    assert sorted(counts) == ALL_PAGES
    assert counts == {
        page_id: len(vectors)
        for page_id, vectors in zip(ALL_PAGES, filled.get_page_vectors(ALL_PAGES), strict=True)
    }


# ---------------------------------------------------------------------- deleting


def test_delete_removes_a_document(filled):
    filled.delete("a")
    assert filled.doc_ids() == ["b", "c"]


def test_deleting_what_is_not_stored_commits_nothing(filled):
    filled.delete("a")
    version = filled.version
    filled.delete("a")  # nothing left: no new version
    filled.delete("x' OR '1'='1")
    assert filled.version == version


def test_delete_nodes_by_id_ignores_missing_ids(filled):
    filled.delete_nodes(["b-p1", "missing"])
    assert _ids(filled.get_nodes(filters=_where("doc_id", "b"))) == ["b-p2", "b-p3"]


def test_delete_nodes_by_filters(filled):
    filled.delete_nodes(filters=_where("topic", "law"))
    assert filled.doc_ids() == ["a", "b"]


def test_delete_nodes_with_ids_and_filters_needs_both(filled):
    filled.delete_nodes(["b-p2", "b-p3"], filters=_where("page_number", 3))
    assert _ids(filled.get_nodes(filters=_where("doc_id", "b"))) == ["b-p1", "b-p2"]


def test_delete_nodes_of_no_ids_deletes_nothing(filled):
    version = filled.version
    filled.delete_nodes([])
    assert filled.version == version and filled.count() == 9


def test_delete_nodes_without_ids_or_filters_is_refused(filled):
    with pytest.raises(InvalidRequestError, match="use clear"):
        filled.delete_nodes()
    assert issubclass(InvalidRequestError, ValueError)
    assert filled.count() == 9


def test_clear_keeps_the_table_and_its_fingerprint(filled):
    filled.clear()
    assert filled.count() == 0
    assert filled.fingerprint == FINGERPRINT


# ---------------------------------------------------------------------- async variants


def test_async_writes(store):
    async def scenario():
        pages = document_pages("a", 3)
        ids = await store.async_add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT)
        result = await store.aupsert_pages(
            document_pages("b", 2), vectors_for(document_pages("b", 2))
        )
        return ids, result

    ids, result = asyncio.run(scenario())
    assert ids == ["a-p1", "a-p2", "a-p3"]
    assert result.added == ["b-p1", "b-p2"]


def test_async_reads_keep_the_event_loop_running(filled):
    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        nodes = await filled.aget_nodes(["a-p2"])
        task.cancel()
        return nodes, ticks

    nodes, ticks = asyncio.run(scenario())
    assert [node.node_id for node in nodes] == ["a-p2"] and ticks > 0


def test_async_query(filled):
    query = VectorStoreQuery(
        query_embedding=vectors_for(document_pages("a", 3))[0].tolist(), similarity_top_k=1
    )
    assert asyncio.run(filled.aquery(query)).ids == ["a-p1"]


def test_async_deletes(filled):
    async def scenario():
        await filled.adelete_nodes(["a-p1"])
        await filled.adelete("b")
        left = _ids(await filled.aget_nodes())
        await filled.aclear()
        return left, await filled.aget_nodes()

    left, cleared = asyncio.run(scenario())
    assert left == ["a-p2", "a-p3", "c-p1", "c-p2", "c-p3"]
    assert cleared == []


# ---------------------------------------------------------------------- native multi-vector query


QUERY_VECTORS = unit_vectors(999, n_vectors=4)


def test_native_multivector_query_scores_are_maxsim(filled):
    result = filled.query(
        VectorStoreQuery(query_embedding=QUERY_VECTORS.tolist(), similarity_top_k=4)
    )
    assert len(result.ids) == 4
    stored = dict(zip(ALL_PAGES, filled.get_page_vectors(ALL_PAGES), strict=True))
    maxsim = {
        page_id: float((QUERY_VECTORS @ vectors.astype(np.float32).T).max(axis=1).sum())
        for page_id, vectors in stored.items()
    }
    best = sorted(maxsim, key=maxsim.get, reverse=True)[:4]
    assert result.ids == best
    np.testing.assert_allclose(result.similarities, [maxsim[i] for i in best], atol=2e-3)
    assert [node.node_id for node in result.nodes] == best
    assert all(isinstance(node, ImageNode) and node.image for node in result.nodes)


def test_native_query_honours_filters(filled):
    filtered = filled.query(
        VectorStoreQuery(
            query_embedding=QUERY_VECTORS.tolist(),
            similarity_top_k=9,
            filters=_where("topic", "law"),
        )
    )
    assert sorted(filtered.ids) == ["c-p1", "c-p2", "c-p3"]


def test_native_query_honours_doc_ids(filled):
    by_doc = filled.query(
        VectorStoreQuery(
            query_embedding=QUERY_VECTORS[:1].tolist(), similarity_top_k=9, doc_ids=["b"]
        )
    )
    assert sorted(by_doc.ids) == ["b-p1", "b-p2", "b-p3"]


def test_native_query_of_another_dimension_is_refused(filled):
    with pytest.raises(ModelMismatchError):
        filled.query(VectorStoreQuery(query_embedding=[[1.0] * 3]))


def test_native_query_without_vectors_is_refused(filled):
    with pytest.raises(InvalidRequestError, match="query_embedding"):
        filled.query(VectorStoreQuery(query_str="text only"))


# ---------------------------------------------------------------------- vectors and snapshots


def test_iter_page_vectors_yields_every_page_in_batches(filled):
    batches = list(filled.iter_page_vectors(batch_size=4))
    assert all(len(ids) <= 4 for ids, _ in batches)
    seen = {
        page_id: array
        for ids, arrays in batches
        for page_id, array in zip(ids, arrays, strict=True)
    }
    assert sorted(seen) == ALL_PAGES
    expected = filled.get_page_vectors(list(seen))
    for (page_id, array), other in zip(seen.items(), expected, strict=True):
        np.testing.assert_array_equal(array, other, err_msg=page_id)


def test_iter_page_vectors_honours_filters_and_dtype(filled):
    filtered = list(filled.iter_page_vectors(filters=_where("topic", "law"), dtype=np.float32))
    assert sorted(i for ids, _ in filtered for i in ids) == ["c-p1", "c-p2", "c-p3"]
    assert all(a.dtype == np.float32 for _, arrays in filtered for a in arrays)


def test_an_earlier_version_stays_readable_after_later_writes(filled):
    version = filled.version
    filled.delete("a")
    assert filled.version > version
    old = [i for ids, _ in filled.iter_page_vectors(version=version) for i in ids]
    assert len(old) == 9
    assert filled.get_page_vectors(["a-p1"], version=version)[0].shape[1] == DIM


@pytest.mark.parametrize(
    "read_path", ["lance-take", "lancedb-take", "page-id-lookup"], ids=lambda path: path
)
def test_reads_by_page_id_follow_rows_across_versions_and_compaction(
    filled, monkeypatch, read_path
):
    """Pages are read by their row address at a version whose addresses a full read recorded
    (a retriever's refresh): from the Lance dataset, or through LanceDB where no dataset can be
    had. Else they are looked up by page_id. Addresses change when pages are replaced, deleted
    or compacted into new files, and every read still finds its pages."""
    by_address = read_path != "page-id-lookup"
    lookups, taken_from_lance = [], []
    lookup, take = table_module.select_pages, table_module.take_rows
    monkeypatch.setattr(
        table_module, "select_pages", lambda *a, **k: lookups.append(a) or lookup(*a, **k)
    )

    def spied_take(*args):
        taken = take(*args)
        taken_from_lance.append(taken is not None)
        return taken

    monkeypatch.setattr(table_module, "take_rows", spied_take)
    if read_path == "lancedb-take":
        monkeypatch.setattr(table_module, "lance_dataset", lambda table: None)

    def at(version: int) -> int:
        if by_address:
            filled.page_hashes(version=version)  # what a retriever's refresh reads
        return version

    first = at(filled.version)
    old_vectors = filled.get_page_vectors(["a-p1", "b-p2"], version=first)
    assert [node.node_id for node in filled.get_nodes(["b-p2", "a-p1", "zz", "b-p2"])] == [
        "b-p2",
        "a-p1",
    ]
    filled.add([page_document("a", 1, text="changed")], page_vectors=[unit_vectors(7)])
    filled.delete("b")
    at(filled.version)
    assert filled.get_nodes(["a-p1"])[0].text == "changed"
    assert filled.get_nodes(["b-p2"]) == []
    np.testing.assert_allclose(filled.get_page_vectors(["a-p1"])[0], unit_vectors(7), atol=1e-3)
    again = filled.get_page_vectors(["a-p1", "b-p2"], version=at(first))
    for before, after in zip(old_vectors, again, strict=True):
        np.testing.assert_array_equal(before, after)
    filled.compact(grace=timedelta(0))
    at(filled.version)
    nodes = filled.get_nodes(["c-p3", "a-p1", "a-p2"])
    assert [(node.node_id, node.text) for node in nodes] == [
        ("c-p3", "page 3 of c"),
        ("a-p1", "changed"),
        ("a-p2", "page 2 of a"),
    ]
    np.testing.assert_allclose(
        filled.get_page_vectors(["c-p3"])[0], vectors_for(document_pages("c", 3))[2], atol=1e-3
    )
    assert filled.get_nodes([]) == [] and filled.get_page_vectors([]) == []
    assert (len(lookups) == 0) == by_address
    expected_takes = {"lance-take": {True}, "lancedb-take": {False}, "page-id-lookup": set()}
    assert set(taken_from_lance) == expected_takes[read_path]


def test_a_full_read_at_a_version_gives_reads_by_id_their_rows(filled, monkeypatch):
    """A retriever's refresh reads every page's hash at the new version; its reads by id then
    take rows by the addresses that scan recorded. At a version nobody scanned, reads by id
    look pages up by id rather than scan the whole table for addresses."""
    scans, lookups = [], []
    scan, lookup = PageTable.read_all, table_module.select_pages
    monkeypatch.setattr(
        PageTable, "read_all", lambda self, *args: scans.append(args) or scan(self, *args)
    )
    monkeypatch.setattr(
        table_module, "select_pages", lambda *a, **k: lookups.append(a) or lookup(*a, **k)
    )
    version = filled.version
    assert sorted(filled.page_hashes(version=version)) == ALL_PAGES
    assert [node.node_id for node in filled.get_nodes(["a-p1", "c-p3"])] == ["a-p1", "c-p3"]
    assert len(filled.get_page_vectors(["b-p2"], version=version)) == 1
    assert (len(scans), len(lookups)) == (1, 0)
    filled.delete("c")
    assert [node.node_id for node in filled.get_nodes(["a-p1", "c-p3"])] == ["a-p1"]
    assert (len(scans), len(lookups)) == (1, 1)


def test_reads_by_page_id_stay_whole_while_another_thread_writes(filled):
    """Readers keep finding the pages nobody touches while a writer replaces and deletes others
    (each write a new version, so the readers' row maps and handles keep changing)."""
    stable = ["c-p1", "c-p2", "c-p3"]
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        by_address = False
        try:
            while not done.is_set():
                # Half the reads at a version whose row addresses were just recorded.
                if by_address := not by_address:
                    filled.page_hashes(version=filled.version)
                assert [node.node_id for node in filled.get_nodes(stable)] == stable
                assert len(filled.get_page_vectors(stable)) == 3
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            done.set()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(6):
            page = page_document("a", 1 + round_ % 3, text=f"round {round_}")
            filled.add([page], page_vectors=[unit_vectors(round_)])
            filled.delete_nodes([f"b-p{1 + round_ % 3}"])
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert not errors, errors[0]
    assert filled.get_nodes(["a-p3"])[0].text == "round 5"


def test_get_page_vectors_of_missing_pages_raises(filled):
    filled.delete("a")
    with pytest.raises(KeyError, match="a-p1") as raised:
        filled.get_page_vectors(["a-p1", "b-p1"])
    assert isinstance(raised.value, PageNotFoundError)
    assert raised.value.page_ids == ["a-p1"]


def test_page_ids_and_hashes_of_a_new_store_are_empty(store):
    assert store.page_ids() == [] and store.page_hashes() == {}


def test_page_hashes_cover_the_page_ids(filled):
    hashes = filled.page_hashes()
    assert sorted(hashes) == sorted(filled.page_ids()) == ALL_PAGES
    assert hashes == filled.page_hashes(page_ids=list(hashes))


def test_page_ids_honour_filters(filled):
    assert sorted(filled.page_ids(filters=_where("topic", "law"))) == ["c-p1", "c-p2", "c-p3"]


def test_two_page_hash_reads_show_what_changed(filled):
    hashes = filled.page_hashes()
    filled.add([page_document("a", 1, text="changed")], page_vectors=[unit_vectors(7)])
    filled.delete("b")
    now = filled.page_hashes()
    changed = {p for p, h in now.items() if hashes.get(p) != h}
    assert changed == {"a-p1"}
    assert set(hashes) - set(now) == {"b-p1", "b-p2", "b-p3"}


def test_nodes_read_at_an_earlier_version_are_the_pages_as_they_were(filled):
    """A retriever reads its hits' nodes at the version it searched: a page replaced or
    deleted since comes back as it was scored, not with content it was never scored on."""
    version = filled.version
    before = {node.node_id: node.text for node in filled.get_nodes(["a-p1", "b-p2"])}
    filled.add([page_document("a", 1, text="changed")], page_vectors=[unit_vectors(7)])
    filled.delete("b")

    at_version = filled.get_nodes(["b-p2", "a-p1"], version=version)
    assert [node.node_id for node in at_version] == ["b-p2", "a-p1"]
    assert {node.node_id: node.text for node in at_version} == before
    assert before["a-p1"] != "changed"
    now = filled.get_nodes(["b-p2", "a-p1"])
    assert [(node.node_id, node.text) for node in now] == [("a-p1", "changed")]
    then = asyncio.run(filled.aget_nodes(["b-p2"], version=version))
    assert [(node.node_id, node.text) for node in then] == [("b-p2", before["b-p2"])]
    tax_then = filled.get_nodes(filters=_where("topic", "tax"), version=version)
    assert _ids(tax_then) == sorted(f"{d}-p{n}" for d in "ab" for n in (1, 2, 3))
    # The new a-p1 has no topic; b is gone.
    assert _ids(filled.get_nodes(filters=_where("topic", "tax"))) == ["a-p2", "a-p3"]


def test_page_ids_and_hashes_read_an_earlier_version(filled):
    version, hashes = filled.version, filled.page_hashes()
    filled.add([page_document("a", 1, text="changed")], page_vectors=[unit_vectors(7)])
    filled.delete("b")
    assert filled.page_hashes(version=version) == hashes
    assert len(filled.page_ids(version=version)) == 9
