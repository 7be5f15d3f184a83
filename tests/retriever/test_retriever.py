"""ColPaliRetriever: exact and fast MaxSim over a real LanceDB store, as a LlamaIndex retriever."""

from __future__ import annotations

import asyncio
import base64
import gc
import threading
import weakref
import zlib

import numpy as np
import pytest
import torch
from llama_index.core import Settings
from llama_index.core.llms.mock import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import get_response_synthesizer
from llama_index.core.schema import ImageDocument, QueryBundle
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from PIL import Image

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import EmptyInputError, ModelMismatchError
from llama_index_vlm.images import decode_image, encode_image
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.pages import page_id_for
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore

N_FILES, PAGES_PER_FILE = 3, 4


def _seed(page_id: str) -> int:
    return zlib.crc32(page_id.encode())


def _page_image(seed: int) -> Image.Image:
    # Noise at the model's own resolution, so every page embeds differently even for a tiny
    # model that sees 32x32 pixels.
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((96, 128), Image.Resampling.NEAREST)


def _documents(n_files: int = N_FILES, seed_offset: int = 0) -> list[ImageDocument]:
    documents = []
    for file_index in range(n_files):
        doc_id = f"doc{file_index + seed_offset}"
        for page_number in range(1, PAGES_PER_FILE + 1):
            page_id = page_id_for(doc_id, page_number)
            image = encode_image(_page_image(_seed(page_id)), "PNG")
            documents.append(
                ImageDocument(
                    id_=page_id,
                    image=base64.b64encode(image).decode(),
                    image_mimetype="image/png",
                    metadata={
                        "doc_id": doc_id,
                        "page_id": page_id,
                        "file_path": f"/reports/{doc_id}.pdf",
                        "file_name": f"{doc_id}.pdf",
                        "page_number": page_number,
                        "page_count": PAGES_PER_FILE,
                        "width": 96,
                        "height": 128,
                        "dpi": 144,
                        "year": 2020 + file_index,
                    },
                )
            )
    return documents


@pytest.fixture
def store(tmp_path, colpali_encoder):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(_documents(), colpali_encoder, store, show_progress=False)
    return store


def _reference_scores(encoder: ColPaliEncoder, store: LanceDBPageStore, query: str):
    """MaxSim of every stored page by transformers' own score_retrieval, on stored vectors."""
    page_ids = sorted(store.page_ids())
    page_vectors = store.get_page_vectors(page_ids, dtype=np.float32)
    (query_vectors,) = encoder.embed_queries([query])
    scores = encoder.processor.score_retrieval(
        [torch.from_numpy(query_vectors)], [torch.from_numpy(v) for v in page_vectors]
    )[0]
    return dict(zip(page_ids, scores.tolist(), strict=True))


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_results_are_the_exact_maxsim_ranking(store, colpali_encoder, search_mode):
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=5,
        search_mode=search_mode,
        candidate_depth=N_FILES * PAGES_PER_FILE,  # fast mode reranks every page here
    )
    hits = retriever.retrieve("What was the revenue in 2023?")
    reference = _reference_scores(colpali_encoder, store, "What was the revenue in 2023?")
    expected = sorted(reference, key=reference.get, reverse=True)[:5]
    assert [hit.node.node_id for hit in hits] == expected
    for hit in hits:
        assert hit.score == pytest.approx(reference[hit.node.node_id], abs=1e-3)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert retriever.resolved_search_mode == ("exact" if search_mode == "exact" else "fast")


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_pages_pooled_at_ingest_rank_by_maxsim_of_their_stored_vectors(
    tmp_path, colpali_encoder, search_mode
):
    store = LanceDBPageStore(uri=str(tmp_path / "pooled"))
    ingest_documents(_documents(), colpali_encoder, store, pool_factor=2, show_progress=False)
    n_vectors = {len(v) for v in store.get_page_vectors(store.page_ids())}
    (full,) = colpali_encoder.embed_images([_page_image(1)], show_progress=False)
    assert n_vectors == {-(-len(full) // 2)}
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=5,
        search_mode=search_mode,
        candidate_depth=N_FILES * PAGES_PER_FILE,
    )
    reference = _reference_scores(colpali_encoder, store, "revenue in 2023")
    hits = retriever.retrieve("revenue in 2023")
    assert [hit.node.node_id for hit in hits] == sorted(reference, key=reference.get, reverse=True)[
        :5
    ]
    for hit in hits:
        assert hit.score == pytest.approx(reference[hit.node.node_id], abs=1e-3)


def test_nodes_carry_page_metadata_and_their_image(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    hit = retriever.retrieve("warranty")[0]
    metadata = hit.node.metadata
    assert {"doc_id", "file_path", "file_name", "page_number"} <= set(metadata)
    assert hit.node.node_id == page_id_for(metadata["doc_id"], metadata["page_number"])
    assert hit.node.ref_doc_id == metadata["doc_id"]
    image = decode_image(hit.node.image)  # resolves without the original file
    page = int(metadata["page_number"])
    expected = _page_image(_seed(page_id_for(metadata["doc_id"], page)))
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_image_query_finds_its_own_page(store, colpali_encoder, tmp_path):
    target = page_id_for("doc1", 3)
    path = tmp_path / "query.png"
    _page_image(_seed(target)).save(path)
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=3)
    hits = retriever.retrieve(QueryBundle(query_str="", image_path=str(path)))
    assert hits[0].node.node_id == target
    assert hits[0].score > hits[1].score


def test_fast_mode_finds_the_exact_top_page_for_page_queries(store, colpali_encoder, tmp_path):
    fast = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        search_mode="auto",
        fast_min_pages=1,
        candidate_depth=3,
        similarity_top_k=1,
    )
    assert fast.resolved_search_mode == "fast"
    for doc_index, page in [(0, 1), (1, 4), (2, 2)]:
        target = page_id_for(f"doc{doc_index}", page)
        path = tmp_path / f"{target}.png"
        _page_image(_seed(target)).save(path)
        (hit,) = fast.retrieve(QueryBundle(query_str="", image_path=str(path)))
        assert hit.node.node_id == target


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_filters_narrow_results(store, colpali_encoder, search_mode):
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="file_name", value="doc1.pdf"),
            MetadataFilter(key="page_number", value=2, operator=FilterOperator.GTE),
        ]
    )
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=10,
        filters=filters,
        search_mode=search_mode,
    )
    hits = retriever.retrieve("revenue")
    assert sorted(hit.node.metadata["page_number"] for hit in hits) == [2, 3, 4]
    assert {hit.node.metadata["file_name"] for hit in hits} == {"doc1.pdf"}
    by_year = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=10,
        search_mode=search_mode,
        filters=MetadataFilters(filters=[MetadataFilter(key="year", value=2022)]),
    )
    assert {hit.node.metadata["doc_id"] for hit in by_year.retrieve("revenue")} == {"doc2"}
    nothing = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        filters=MetadataFilters(filters=[MetadataFilter(key="file_name", value="x' OR '1'='1")]),
    )
    assert nothing.retrieve("revenue") == []


def test_async_equals_sync(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=4)
    sync = retriever.retrieve("safety instructions")
    asynchronous = asyncio.run(retriever.aretrieve("safety instructions"))
    assert [(h.node.node_id, h.score) for h in sync] == [
        (h.node.node_id, h.score) for h in asynchronous
    ]


def test_empty_store_returns_nothing_and_empty_query_raises(tmp_path, colpali_encoder, store):
    empty = LanceDBPageStore(uri=str(tmp_path / "empty"))
    assert ColPaliRetriever(encoder=colpali_encoder, store=empty).retrieve("anything") == []
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store)
    with pytest.raises(EmptyInputError, match="empty"):
        retriever.retrieve("   ")


def test_new_and_deleted_pages_are_seen_by_the_next_query(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=100)
    assert len(retriever.retrieve("revenue")) == N_FILES * PAGES_PER_FILE
    ingest_documents(_documents(1, seed_offset=7), colpali_encoder, store, show_progress=False)
    hits = retriever.retrieve("revenue")
    assert len(hits) == (N_FILES + 1) * PAGES_PER_FILE
    assert any(hit.node.metadata["doc_id"] == "doc7" for hit in hits)
    store.delete("doc0")
    hits = retriever.retrieve("revenue")
    assert len(hits) == N_FILES * PAGES_PER_FILE
    assert all(hit.node.metadata["doc_id"] != "doc0" for hit in hits)


def test_vectors_of_another_model_are_refused(store, colqwen2_encoder):
    with pytest.raises(ModelMismatchError):
        ColPaliRetriever(encoder=colqwen2_encoder, store=store).retrieve("revenue")


def test_works_in_llamaindex_retriever_query_engine_with_postprocessors(
    store, colpali_encoder, monkeypatch
):
    # No answer is synthesised ("no_text"); a mock LLM keeps LlamaIndex from reaching OpenAI.
    monkeypatch.setattr(Settings, "_llm", MockLLM())
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=6)
    scores = sorted((hit.score for hit in retriever.retrieve("revenue")), reverse=True)
    cutoff = (scores[1] + scores[2]) / 2  # keeps exactly the two best pages
    engine = RetrieverQueryEngine.from_args(
        retriever,
        response_synthesizer=get_response_synthesizer(response_mode="no_text"),
        node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=cutoff)],
    )
    response = engine.query("revenue")
    assert [round(node.score, 4) for node in response.source_nodes] == [
        round(s, 4) for s in scores[:2]
    ]


def test_as_retriever_and_settings_round_trip(store, colpali_encoder):
    filters = MetadataFilters(filters=[MetadataFilter(key="page_number", value=1)])
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=3,
        filters=filters,
        search_mode="exact",
    )
    assert retriever.as_retriever() is retriever
    wider = retriever.as_retriever(similarity_top_k=7)
    assert wider.similarity_top_k == 7 and wider.filters == filters
    with pytest.raises(TypeError, match="unknown retriever settings"):
        retriever.as_retriever(top_k=3)
    data = retriever.to_dict()
    restored = ColPaliRetriever.from_dict(data, encoder=colpali_encoder)
    assert restored.to_dict() == data
    assert [h.node.node_id for h in restored.retrieve("revenue")] == [
        h.node.node_id for h in retriever.retrieve("revenue")
    ]
    with pytest.raises(ValueError, match="similarity_top_k"):
        ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=0)
    with pytest.raises(ValueError, match="search_mode"):
        ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="approximate")


def _count_loaded_pages(monkeypatch) -> list[str]:
    """Page ids whose vectors the store reads from now on (every store, every caller)."""
    loaded: list[str] = []
    read = LanceDBPageStore.get_page_vectors

    def counting(store, page_ids, *args, **kwargs):
        loaded.extend(page_ids)
        return read(store, page_ids, *args, **kwargs)

    monkeypatch.setattr(LanceDBPageStore, "get_page_vectors", counting)
    return loaded


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_retrievers_over_one_store_share_its_pages_in_memory(
    store, colpali_encoder, monkeypatch, search_mode
):
    loaded = _count_loaded_pages(monkeypatch)
    settings = {"search_mode": search_mode, "similarity_top_k": 1, "candidate_depth": 1}
    first = ColPaliRetriever(encoder=colpali_encoder, store=store, **settings)
    copy = first.as_retriever(similarity_top_k=1)  # a copy, made before any query
    other = ColPaliRetriever(encoder=colpali_encoder, store=store, **settings)
    first.retrieve("revenue")
    assert sorted(loaded[: N_FILES * PAGES_PER_FILE]) == sorted(store.page_ids())
    n_after_first = len(loaded)
    copy.retrieve("revenue")
    other.retrieve("revenue")
    # Exact mode loads nothing more; fast mode reads only its one reranked candidate per query.
    reranked = 0 if search_mode == "exact" else 1
    assert len(loaded) == n_after_first + 2 * reranked
    assert first._cache is copy._cache is other._cache


def test_a_shared_cache_is_freed_with_its_last_retriever(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="exact")
    retriever.retrieve("revenue")
    cache = weakref.ref(retriever._cache)
    copy = retriever.as_retriever(similarity_top_k=1)
    copy.retrieve("revenue")
    del retriever
    gc.collect()
    assert cache() is copy._cache  # the copy still holds it
    del copy
    gc.collect()
    assert cache() is None
    fresh = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="exact")
    assert len(fresh.retrieve("revenue")) == 5  # a new cache, loaded again


def test_retrievers_over_different_stores_do_not_share(store, colpali_encoder, tmp_path):
    other_store = LanceDBPageStore(uri=str(tmp_path / "other"))
    ingest_documents(
        _documents(1, seed_offset=5), colpali_encoder, other_store, show_progress=False
    )
    ours = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=100)
    theirs = ColPaliRetriever(encoder=colpali_encoder, store=other_store, similarity_top_k=100)
    assert {hit.node.metadata["doc_id"] for hit in theirs.retrieve("revenue")} == {"doc5"}
    assert len(ours.retrieve("revenue")) == N_FILES * PAGES_PER_FILE
    assert ours._cache is not theirs._cache


def test_fast_mode_reads_rerank_vectors_without_holding_the_cache(
    store, colpali_encoder, monkeypatch
):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="fast")
    retriever.retrieve("revenue")  # builds the cache
    cache = retriever._cache
    read = LanceDBPageStore.get_page_vectors
    lock_free_while_reading: list[bool] = []

    def reading(store, page_ids, *args, **kwargs):
        # Another query's thread must be able to take the cache while this one reads vectors.
        probe = threading.Thread(
            target=lambda: lock_free_while_reading.append(_try_lock(cache.lock))
        )
        probe.start()
        probe.join()
        return read(store, page_ids, *args, **kwargs)

    monkeypatch.setattr(LanceDBPageStore, "get_page_vectors", reading)
    hits = retriever.retrieve("revenue")
    assert hits and lock_free_while_reading == [True]


def _try_lock(lock) -> bool:
    if lock.acquire(blocking=False):
        lock.release()
        return True
    return False
