"""Retrieval idioms: normalised scores for LlamaIndex's similarity cutoffs, hybrid page search,
and every public component's ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import pytest
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.schema import MetadataMode, QueryBundle
from page_documents import page_document

from llama_index_vlm import (
    ColPaliRetriever,
    HuggingFaceVLM,
    LanceDBPageStore,
    PageVectorTransform,
    PDFPageReader,
)
from llama_index_vlm.retriever.ranking import MAXSIM_SCORE_KEY, TEXT_SCORE_KEY


def test_normalized_scores_are_maxsim_per_query_token(idiom_index, colpali_encoder):
    raw = idiom_index.as_retriever(similarity_top_k=3).retrieve("revenue 2023")
    normalized = idiom_index.as_retriever(similarity_top_k=3, score="normalized").retrieve(
        "revenue 2023"
    )
    (query_vectors,) = colpali_encoder.embed_queries(["revenue 2023"], show_progress=False)
    by_page = {hit.node.node_id: hit.score for hit in raw}
    for hit in normalized:
        assert hit.score == pytest.approx(by_page[hit.node.node_id] / len(query_vectors))
        assert -1 <= hit.score <= 1


def test_the_raw_score_is_kept_in_hidden_metadata(idiom_index):
    (hit,) = idiom_index.as_retriever(similarity_top_k=1, score="normalized").retrieve("revenue")
    assert hit.node.metadata[MAXSIM_SCORE_KEY] > hit.score
    assert MAXSIM_SCORE_KEY not in hit.node.get_content(metadata_mode=MetadataMode.LLM)


def test_a_similarity_cutoff_filters_normalized_scores(idiom_index):
    hits = idiom_index.as_retriever(similarity_top_k=3, score="normalized").retrieve("revenue")
    cutoff = (hits[0].score + hits[-1].score) / 2
    kept = SimilarityPostprocessor(similarity_cutoff=cutoff).postprocess_nodes(hits)
    assert 1 <= len(kept) < len(hits) and all(hit.score >= cutoff for hit in kept)


def test_hybrid_search_puts_the_page_holding_the_identifier_first(idiom_index):
    hits = idiom_index.as_retriever(similarity_top_k=3, search_mode="hybrid").retrieve("XK-4471-B")
    assert hits[0].node.metadata["page_number"] == 2
    assert TEXT_SCORE_KEY in hits[0].node.metadata
    assert len({hit.node.node_id for hit in hits}) == len(hits) == 3  # each page once


def test_hybrid_search_follows_ingest_and_delete(tmp_path, colpali_encoder):
    from llama_index_vlm import VisualDocumentIndex

    pages = [page_document("a", n, 2, text=f"plain page {n}") for n in (1, 2)]
    index = VisualDocumentIndex.from_documents(
        pages,
        encoder=colpali_encoder,
        store=LanceDBPageStore(uri=str(tmp_path / "pages")),
        show_progress=False,
    )
    retriever = index.as_retriever(similarity_top_k=1, search_mode="hybrid")
    index.insert(page_document("b", 1, 1, text="bracket ZQ-9 inside"))
    assert retriever.retrieve("ZQ-9")[0].node.node_id == "b-p1"
    index.delete_ref_doc("b")
    assert retriever.retrieve("ZQ-9")[0].node.node_id != "b-p1"


def test_an_image_query_in_hybrid_mode_is_visual_only(idiom_index, tmp_path):
    page = idiom_index.store.get_nodes()[0]
    path = tmp_path / "page.jpg"
    path.write_bytes(__import__("base64").b64decode(page.image))
    retriever = idiom_index.as_retriever(similarity_top_k=2, search_mode="hybrid")
    hits = retriever.retrieve(QueryBundle(query_str="", image_path=str(path)))
    assert len(hits) == 2 and all(TEXT_SCORE_KEY not in hit.node.metadata for hit in hits)


# ---------------------------------------------------------------------- to_dict / from_dict


def test_the_retriever_round_trips_through_to_dict(idiom_index, colpali_encoder):
    retriever = idiom_index.as_retriever(
        similarity_top_k=2, search_mode="hybrid", score="normalized"
    )
    data = retriever.to_dict()
    assert data["class_name"] == ColPaliRetriever.class_name() == "ColPaliRetriever"
    copy = ColPaliRetriever.from_dict(data, encoder=colpali_encoder)
    assert copy.to_dict() == data


def test_the_store_round_trips_through_to_dict(idiom_index):
    data = idiom_index.store.to_dict()
    assert LanceDBPageStore.from_dict(data).count() == idiom_index.store.count()


def test_the_reader_round_trips_through_to_dict():
    reader = PDFPageReader(dpi=96, extract_text=True)
    data = reader.to_dict()
    assert data["class_name"] == PDFPageReader.class_name()
    assert PDFPageReader.from_dict(data).to_dict() == data


def test_the_vlm_round_trips_through_to_dict(llava):
    data = llava.to_dict()
    copy = HuggingFaceVLM.from_dict(data)
    assert copy.to_dict() == data and copy.family == llava.family


def test_the_page_transform_round_trips_through_to_dict(colpali_encoder):
    data = PageVectorTransform(colpali_encoder, pool_factor=2).to_dict()
    copy = PageVectorTransform.from_dict(data)
    assert copy.to_dict() == data and copy.fingerprint["pool_factor"] == 2
