"""ColPaliRetriever: exact and fast MaxSim over a real LanceDB store, as a LlamaIndex retriever."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from llama_index.core import Settings
from llama_index.core.llms.mock import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import get_response_synthesizer
from llama_index.core.schema import QueryBundle
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from page_documents import noise_image
from retriever_corpus import N_FILES, PAGE_SIZE, PAGES_PER_FILE, report_documents

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import EmptyInputError, ModelMismatchError, UnsupportedDeviceError
from llama_index_vlm.images import decode_image
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.pages import page_id_for
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore


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


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_resolved_search_mode_is_the_mode_asked_for(store, colpali_encoder, search_mode):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode=search_mode)
    assert retriever.resolved_search_mode == ("exact" if search_mode == "exact" else "fast")


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_pages_pooled_at_ingest_rank_by_maxsim_of_their_stored_vectors(
    tmp_path, colpali_encoder, search_mode
):
    store = LanceDBPageStore(uri=str(tmp_path / "pooled"))
    ingest_documents(report_documents(), colpali_encoder, store, pool_factor=2, show_progress=False)
    n_vectors = {len(v) for v in store.get_page_vectors(store.page_ids())}
    (full,) = colpali_encoder.embed_images([noise_image("any", PAGE_SIZE)], show_progress=False)
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


def test_nodes_carry_their_page_metadata(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    hit = retriever.retrieve("warranty")[0]
    metadata = hit.node.metadata
    assert {"doc_id", "file_path", "file_name", "page_number"} <= set(metadata)
    assert hit.node.node_id == page_id_for(metadata["doc_id"], metadata["page_number"])
    assert hit.node.ref_doc_id == metadata["doc_id"]


def test_nodes_carry_their_page_image(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    hit = retriever.retrieve("warranty")[0]
    image = decode_image(hit.node.image)  # resolves without the original file
    expected = noise_image(hit.node.node_id, PAGE_SIZE)
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_image_query_finds_its_own_page(store, colpali_encoder, tmp_path):
    target = page_id_for("doc1", 3)
    path = tmp_path / "query.png"
    noise_image(target, PAGE_SIZE).save(path)
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
        noise_image(target, PAGE_SIZE).save(path)
        (hit,) = fast.retrieve(QueryBundle(query_str="", image_path=str(path)))
        assert hit.node.node_id == target


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_filters_on_page_fields_narrow_results(store, colpali_encoder, search_mode):
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


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_filters_on_user_metadata_narrow_results(store, colpali_encoder, search_mode):
    by_year = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=10,
        search_mode=search_mode,
        filters=MetadataFilters(filters=[MetadataFilter(key="year", value=2022)]),
    )
    assert {hit.node.metadata["doc_id"] for hit in by_year.retrieve("revenue")} == {"doc2"}


def test_a_filter_no_page_matches_returns_nothing(store, colpali_encoder):
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


def test_an_empty_store_returns_nothing(tmp_path, colpali_encoder):
    empty = LanceDBPageStore(uri=str(tmp_path / "empty"))
    assert ColPaliRetriever(encoder=colpali_encoder, store=empty).retrieve("anything") == []


def test_an_empty_query_is_refused(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store)
    with pytest.raises(EmptyInputError, match="empty"):
        retriever.retrieve("   ")


def test_new_pages_are_seen_by_the_next_query(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=100)
    assert len(retriever.retrieve("revenue")) == N_FILES * PAGES_PER_FILE
    ingest_documents(report_documents(1, first=7), colpali_encoder, store, show_progress=False)
    hits = retriever.retrieve("revenue")
    assert len(hits) == (N_FILES + 1) * PAGES_PER_FILE
    assert any(hit.node.metadata["doc_id"] == "doc7" for hit in hits)


def test_deleted_pages_are_gone_from_the_next_query(store, colpali_encoder):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=100)
    assert len(retriever.retrieve("revenue")) == N_FILES * PAGES_PER_FILE
    store.delete("doc0")
    hits = retriever.retrieve("revenue")
    assert len(hits) == (N_FILES - 1) * PAGES_PER_FILE
    assert all(hit.node.metadata["doc_id"] != "doc0" for hit in hits)


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_hits_are_read_at_the_version_the_search_scored(
    store, colpali_encoder, monkeypatch, search_mode
):
    """A document deleted after the search scored its pages, before their nodes are read,
    still comes back as it was scored: the nodes are read at the searched version."""
    retriever = ColPaliRetriever(
        encoder=colpali_encoder, store=store, similarity_top_k=100, search_mode=search_mode
    )
    scored_at = store.version
    get_nodes = LanceDBPageStore.get_nodes

    def delete_first(self, node_ids, filters=None, *, version=None):
        monkeypatch.setattr(LanceDBPageStore, "get_nodes", get_nodes)
        self.delete("doc0")
        return get_nodes(self, node_ids, filters, version=version)

    monkeypatch.setattr(LanceDBPageStore, "get_nodes", delete_first)
    hits = retriever.retrieve("revenue")
    assert store.version > scored_at
    assert len(hits) == N_FILES * PAGES_PER_FILE
    assert sum(hit.node.metadata["doc_id"] == "doc0" for hit in hits) == PAGES_PER_FILE
    assert len(retriever.retrieve("revenue")) == (N_FILES - 1) * PAGES_PER_FILE


def test_vectors_of_another_model_are_refused(store, colqwen2_encoder):
    with pytest.raises(ModelMismatchError):
        ColPaliRetriever(encoder=colqwen2_encoder, store=store).retrieve("revenue")


def test_the_store_is_checked_once_per_table_version(store, colpali_encoder, monkeypatch):
    """The fingerprint check and the page count (auto mode's choice) are read once per table
    version, and again after a write: the store outgrowing exact mode switches to fast."""
    checks = []
    check = LanceDBPageStore.check_fingerprint
    monkeypatch.setattr(
        LanceDBPageStore, "check_fingerprint", lambda *a: checks.append(a) or check(*a)
    )
    n_pages = N_FILES * PAGES_PER_FILE
    retriever = ColPaliRetriever(
        encoder=colpali_encoder, store=store, similarity_top_k=3, fast_min_pages=n_pages + 1
    )
    for _ in range(3):
        retriever.retrieve("revenue")
    assert len(checks) == 1
    assert type(retriever._cache).__name__ == "ExactPageCache"
    ingest_documents(report_documents(1, first=7), colpali_encoder, store, show_progress=False)
    checks.clear()  # ingestion checks too
    hits = retriever.retrieve("revenue")
    assert len(checks) == 1
    assert type(retriever._cache).__name__ == "FastPageCache"
    assert len(hits) == 3


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


FIRST_PAGES = MetadataFilters(filters=[MetadataFilter(key="page_number", value=1)])


@pytest.fixture
def first_pages(store, colpali_encoder) -> ColPaliRetriever:
    return ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=3,
        filters=FIRST_PAGES,
        search_mode="exact",
    )


def test_as_retriever_without_settings_is_the_retriever_itself(first_pages):
    assert first_pages.as_retriever() is first_pages


def test_as_retriever_with_settings_is_a_copy_that_keeps_the_others(first_pages):
    wider = first_pages.as_retriever(similarity_top_k=7)
    assert wider.similarity_top_k == 7 and wider.filters == FIRST_PAGES


def test_as_retriever_refuses_unknown_settings(first_pages):
    with pytest.raises(TypeError, match="unknown retriever settings"):
        first_pages.as_retriever(top_k=3)


def test_to_dict_and_from_dict_round_trip_to_the_same_results(first_pages, colpali_encoder):
    data = first_pages.to_dict()
    restored = ColPaliRetriever.from_dict(data, encoder=colpali_encoder)
    assert restored.to_dict() == data
    assert [h.node.node_id for h in restored.retrieve("revenue")] == [
        h.node.node_id for h in first_pages.retrieve("revenue")
    ]


def test_similarity_top_k_below_1_is_refused(store, colpali_encoder):
    with pytest.raises(ValueError, match="similarity_top_k"):
        ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=0)


def test_an_unknown_search_mode_is_refused(store, colpali_encoder):
    with pytest.raises(ValueError, match="search_mode"):
        ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="approximate")


def test_a_search_device_makes_auto_exact_and_ranks_as_exact_mode(store, colpali_encoder):
    on_device = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=5,
        fast_min_pages=1,
        search_device="cpu",
    )
    exact = ColPaliRetriever(
        encoder=colpali_encoder, store=store, similarity_top_k=5, search_mode="exact"
    )
    assert on_device.resolved_search_mode == "exact"
    hits = on_device.retrieve("What was the revenue in 2023?")
    want = exact.retrieve("What was the revenue in 2023?")
    assert [hit.node.node_id for hit in hits] == [hit.node.node_id for hit in want]
    assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in want], rel=1e-5)
    assert on_device._cache._snapshot.on_device is not None


def test_fast_mode_with_a_search_device_still_searches_on_the_cpu(store, colpali_encoder):
    retriever = ColPaliRetriever(
        encoder=colpali_encoder, store=store, search_mode="fast", search_device="cpu"
    )
    assert retriever.resolved_search_mode == "fast"
    assert retriever.retrieve("revenue")
    assert type(retriever._cache).__name__ == "FastPageCache"


def test_the_search_device_travels_with_copies_and_dicts(first_pages, colpali_encoder):
    on_device = first_pages.as_retriever(search_device="cpu")
    assert on_device.search_device == "cpu" and on_device.filters == FIRST_PAGES
    data = on_device.to_dict()
    assert data["search_device"] == "cpu"
    restored = ColPaliRetriever.from_dict(data, encoder=colpali_encoder)
    assert restored.search_device == "cpu"
    assert [h.node.node_id for h in restored.retrieve("revenue")] == [
        h.node.node_id for h in first_pages.retrieve("revenue")
    ]


def test_a_cuda_search_device_without_a_gpu_is_refused_at_construction(
    store, colpali_encoder, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UnsupportedDeviceError, match="search_device unset"):
        ColPaliRetriever(encoder=colpali_encoder, store=store, search_device="cuda")


def test_twin_pages_come_back_the_same_in_fast_and_exact_mode(tmp_path, colpali_encoder):
    # The same reports ingested twice under other names: every page has a twin with the same
    # vectors and scores. Both modes break the ties by page id, whatever the ingest order.
    copies = report_documents()
    for page in copies:
        page.metadata["doc_id"] = "copy-" + page.metadata["doc_id"]
        page.metadata["page_id"] = page.id_ = "copy-" + page.metadata["page_id"]
        page.metadata["file_path"] = page.metadata["file_path"].replace("/reports/", "/copies/")
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(report_documents() + copies, colpali_encoder, store, show_progress=False)

    for query in ["warranty", "revenue 2021", "summary"]:
        found = {}
        for mode in ("exact", "fast"):
            retriever = ColPaliRetriever(
                encoder=colpali_encoder,
                store=store,
                search_mode=mode,
                candidate_depth=2 * N_FILES * PAGES_PER_FILE,
                similarity_top_k=5,
            )
            found[mode] = [(hit.node.node_id, hit.score) for hit in retriever.retrieve(query)]
        assert [page for page, _ in found["fast"]] == [page for page, _ in found["exact"]]
        np.testing.assert_allclose(
            [score for _, score in found["fast"]], [score for _, score in found["exact"]], rtol=1e-6
        )
        ids = [page for page, _ in found["exact"]]
        assert ids[0].startswith("copy-") and ids[1] == ids[0].removeprefix("copy-")
