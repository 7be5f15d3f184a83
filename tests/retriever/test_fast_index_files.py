"""The fast index persisted beside a local store: reused by a new process, refreshed only where
the table changed, safe when two processes open it at once, never trusted when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from page_documents import document_pages
from retriever_corpus import N_FILES, PAGES_PER_FILE

from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.search import FastPageIndex
from llama_index_vlm.store import LanceDBPageStore

N_PAGES = N_FILES * PAGES_PER_FILE


def fast_retriever(encoder, uri: str) -> ColPaliRetriever:
    """A retriever over a new store object: its own page cache, as in a new process."""
    store = LanceDBPageStore(uri=uri)
    return ColPaliRetriever(
        encoder=encoder, store=store, similarity_top_k=N_PAGES + 10, search_mode="fast"
    )


def ranking(retriever: ColPaliRetriever) -> list[tuple[str, float]]:
    return [(hit.node.node_id, round(hit.score, 4)) for hit in retriever.retrieve("revenue")]


@pytest.fixture
def pooled(monkeypatch):
    """``pooled()`` -> how many pages FastPageIndex has pooled since the fixture started."""
    counts = [0]
    encode = FastPageIndex.encode

    def counting(index, page_vectors, *args, **kwargs):
        counts[0] += len(page_vectors)
        return encode(index, page_vectors, *args, **kwargs)

    monkeypatch.setattr(FastPageIndex, "encode", counting)
    return lambda: counts[0]


def test_a_new_process_reuses_the_saved_index(store, colpali_encoder, pooled, monkeypatch):
    first = ranking(fast_retriever(colpali_encoder, store.uri))
    assert pooled() == N_PAGES
    assert store.uri and (Path(store.uri) / "pages.fast-index" / "manifest.json").exists()
    reads: list[list[str]] = []
    get_page_vectors = LanceDBPageStore.get_page_vectors

    def counting_reads(self, page_ids, *args, **kwargs):
        reads.append(list(page_ids))
        return get_page_vectors(self, page_ids, *args, **kwargs)

    monkeypatch.setattr(LanceDBPageStore, "get_page_vectors", counting_reads)
    again = ranking(fast_retriever(colpali_encoder, store.uri))
    assert again == first
    assert pooled() == N_PAGES  # nothing pooled again
    assert reads == []  # nor read from the table: the rerank reads the saved vectors


def test_a_write_makes_only_the_changed_pages_stale(store, colpali_encoder, pooled):
    ranking(fast_retriever(colpali_encoder, store.uri))
    ingest_documents(document_pages("new", 2), colpali_encoder, store, show_progress=False)
    store.delete("doc0")
    pooled_before = pooled()
    retriever = fast_retriever(colpali_encoder, store.uri)
    found = {page_id for page_id, _ in ranking(retriever)}
    assert pooled() - pooled_before == 2  # the two new pages only
    assert found == set(store.page_ids())
    assert {"new-p1", "new-p2"} <= found and not any(i.startswith("doc0") for i in found)
    # And the next process finds all of it saved.
    ranking(fast_retriever(colpali_encoder, store.uri))
    assert pooled() - pooled_before == 2


def test_damaged_files_are_ignored_and_rewritten(store, colpali_encoder, pooled):
    expected = ranking(fast_retriever(colpali_encoder, store.uri))
    manifest = Path(store.uri) / "pages.fast-index" / "manifest.json"
    saved = json.loads(manifest.read_text())
    segment = next(iter(saved["pages"].values()))[0]
    (manifest.parent / segment / "codes.npy").write_bytes(b"not an array")
    assert ranking(fast_retriever(colpali_encoder, store.uri)) == expected
    assert pooled() == 2 * N_PAGES  # pooled again from the table, not read from the bad file
    assert ranking(fast_retriever(colpali_encoder, store.uri)) == expected
    assert pooled() == 2 * N_PAGES  # and saved again


_OPEN_AND_SEARCH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from llama_index_vlm.retriever.page_caches import FastPageCache
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=sys.argv[1])
    query = np.load(sys.argv[2])
    hits = FastPageCache(store).search(query, 100, version=store.version, candidate_depth=100)
    print(json.dumps([[page_id, round(score, 4)] for page_id, score in hits]))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two fresh interpreters importing torch, LanceDB and LlamaIndex
def test_two_processes_opening_at_once_are_safe(store, colpali_encoder, tmp_path):
    query = colpali_encoder.embed_queries(["revenue"])[0]
    np.save(tmp_path / "query.npy", query)
    command = [sys.executable, "-c", _OPEN_AND_SEARCH, store.uri, str(tmp_path / "query.npy")]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    results = [json.loads(stdout) for stdout, _ in outputs]
    assert results[0] == results[1] and len(results[0]) == N_PAGES
    # Whichever wrote last, the files are whole: a new reader takes every page from them.
    assert ranking(fast_retriever(colpali_encoder, store.uri))[0][0] == results[0][0][0]


def test_ingest_saves_the_fast_index_of_a_store_above_the_fast_mode_threshold(
    tmp_path, colpali_encoder, pooled, monkeypatch
):
    monkeypatch.setattr("llama_index_vlm.search.FAST_MODE_MIN_PAGES", 3)
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(document_pages("small", 2), colpali_encoder, store, show_progress=False)
    assert not (tmp_path / "index" / "pages.fast-index").exists()  # 2 pages: exact mode
    ingest_documents(document_pages("more", 3), colpali_encoder, store, show_progress=False)
    assert pooled() == 5
    manifest = json.loads((tmp_path / "index" / "pages.fast-index" / "manifest.json").read_text())
    assert manifest["table_version"] == store.version and len(manifest["pages"]) == 5
    assert len(ranking(fast_retriever(colpali_encoder, store.uri))) == 5
    assert pooled() == 5  # the search pooled nothing


def test_many_small_commits_are_merged_into_one_segment(tmp_path):
    from llama_index_vlm.retriever.fast_index_files import FastIndexFiles

    rng = np.random.default_rng(0)
    pages = {f"p{i}": rng.standard_normal((16, 8)).astype(np.float16) for i in range(80)}
    hashes = {page_id: f"h{page_id}" for page_id in pages}
    index, files = FastPageIndex(pool_factor=4), FastIndexFiles(tmp_path / "fast-index")
    for version, start in enumerate(range(0, 80, 2), start=1):  # 40 commits of 2 pages
        chunk = {i: pages[i] for i in list(pages)[start : start + 2]}
        index.add(list(chunk), list(chunk.values()))
        files.add_segment(index, chunk, hashes)
        files.commit(version, index, {i: hashes[i] for i in list(pages)[: start + 2]})
    manifest = json.loads((tmp_path / "fast-index" / "manifest.json").read_text())
    assert len(manifest["pages"]) == 80
    assert len({segment for segment, _, _ in manifest["pages"].values()}) <= 33
    reopened = FastIndexFiles(tmp_path / "fast-index")
    restored = FastPageIndex(pool_factor=4)
    assert sorted(reopened.load(restored, hashes)) == sorted(pages)
    read = reopened.reader()
    assert all(np.array_equal(v, pages[i]) for i, v in zip(pages, read(list(pages)), strict=True))
    assert read(["p3", "not-saved"])[1] is None


@pytest.mark.parametrize(
    ("saved_by", "loaded_by"), [("float16", "bfloat16"), ("bfloat16", "float16")]
)
def test_saved_codes_load_into_an_index_of_either_code_type(tmp_path, saved_by, loaded_by):
    # The files keep float16 codes whatever the writer's CPU preferred; a reader on another
    # CPU keeps them in its own type.
    from llama_index_vlm.retriever.fast_index_files import FastIndexFiles
    from llama_index_vlm.search.code_scores import code_matrix, float16_codes

    rng = np.random.default_rng(1)
    pages = {f"p{i}": rng.standard_normal((16, 8)).astype(np.float16) for i in range(40)}
    hashes = {page_id: f"h{page_id}" for page_id in pages}
    index = FastPageIndex(pool_factor=4, code_dtype=saved_by)
    index.add(list(pages), list(pages.values()))
    index.train_codebook()
    files = FastIndexFiles(tmp_path / "fast-index")
    files.add_segment(index, pages, hashes)
    files.commit(1, index, hashes)
    restored = FastPageIndex(pool_factor=4, code_dtype=loaded_by)
    assert sorted(FastIndexFiles(tmp_path / "fast-index").load(restored, hashes)) == sorted(pages)
    assert restored.code_dtype == loaded_by
    for page_id in pages:
        codes, ids = index.page_codes(page_id)
        restored_codes, restored_ids = restored.page_codes(page_id)
        np.testing.assert_array_equal(restored_codes, float16_codes(code_matrix(codes, loaded_by)))
        np.testing.assert_array_equal(restored_ids, ids)  # the saved centroids, not reassigned
    fetch = lambda ids: [pages[i] for i in ids]  # noqa: E731
    for page_id in ("p3", "p27"):
        query = pages[page_id][:4].astype(np.float32)
        found, scores = restored.search(query, 5, rerank_fn=fetch)
        expected, expected_scores = index.search(query, 5, rerank_fn=fetch)
        assert found[0] == page_id and found == expected
        np.testing.assert_array_equal(scores, expected_scores)


def _saved_pages(directory: Path, n_pages: int = 6):
    from llama_index_vlm.retriever.fast_index_files import FastIndexFiles

    rng = np.random.default_rng(2)
    # Pages of different lengths, so each page's byte range is its own.
    pages = {f"p{i}": rng.standard_normal((8 + i, 8)).astype(np.float16) for i in range(n_pages)}
    hashes = {page_id: f"h{page_id}" for page_id in pages}
    index, files = FastPageIndex(pool_factor=4), FastIndexFiles(directory)
    index.add(list(pages), list(pages.values()))
    files.add_segment(index, pages, hashes)
    files.commit(1, index, hashes)
    reopened = FastIndexFiles(directory)
    reopened.load(FastPageIndex(pool_factor=4), hashes)
    return pages, reopened


@pytest.mark.skipif(
    not hasattr(os, "posix_fadvise"), reason="the OS takes no read advice (no posix_fadvise)"
)
def test_a_read_first_asks_the_os_for_each_pages_byte_range(tmp_path, monkeypatch):
    pages, files = _saved_pages(tmp_path / "fast-index")
    advice: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *args: advice.append(args))
    wanted = ["p4", "p1", "p5"]
    vectors = files.reader()(wanted)
    assert [a for _, _, a in advice] == [os.POSIX_FADV_WILLNEED] * 3
    segment_dir = next((tmp_path / "fast-index").glob("seg-*"))
    data_start = np.load(segment_dir / "vectors.npy", mmap_mode="r").offset
    row_bytes = 8 * 2  # 8 float16 dims
    lengths = [8 + i for i in range(len(pages))]
    firsts = np.concatenate([[0], np.cumsum(lengths)])
    expected = [
        (data_start + int(firsts[i]) * row_bytes, lengths[i] * row_bytes) for i in (4, 1, 5)
    ]
    assert [(start, length) for start, length, _ in advice] == expected
    # The advised ranges are the pages the reader then returns.
    raw = (segment_dir / "vectors.npy").read_bytes()
    for (start, length), page_id, read in zip(expected, wanted, vectors, strict=True):
        assert raw[start : start + length] == pages[page_id].tobytes() == read.tobytes()


def test_without_posix_fadvise_the_reader_reads_the_same_pages(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    pages, files = _saved_pages(tmp_path / "fast-index")
    read = files.reader()(list(pages))
    assert all(np.array_equal(v, pages[i]) for i, v in zip(pages, read, strict=True))
