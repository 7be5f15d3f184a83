"""VisualDocumentIndex: the LlamaIndex facade over reader, encoder, store, retriever and VLM."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Settings
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine
from pdfs import write_text_pdf
from PIL import Image

from llama_index_vlm import (
    ColPaliRetriever,
    HuggingFaceVLM,
    LanceDBPageStore,
    PDFPageReader,
    VisualDocumentIndex,
)
from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.index import cited_pages


@pytest.fixture(scope="module")
def llava(tiny_checkpoint):
    return HuggingFaceVLM.from_pretrained(tiny_checkpoint("llava"), max_new_tokens=6)


@pytest.fixture
def documents(tmp_path):
    write_text_pdf(tmp_path / "report.pdf", ["Revenue 2023", "Costs", "Outlook"])
    write_text_pdf(tmp_path / "manual.pdf", ["Installation", "Safety"])
    return PDFPageReader(dpi=36).load_data(tmp_path)


@pytest.fixture
def index(documents, colpali_encoder, tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "vlm_index"))
    return VisualDocumentIndex.from_documents(
        documents, encoder=colpali_encoder, store=store, show_progress=False
    )


def test_from_documents_stores_every_page_once(index, documents):
    assert index.store.count() == len(documents) == 5
    assert index.last_report.pages_added == 5


def test_from_documents_again_writes_nothing(index, documents, colpali_encoder):
    again = VisualDocumentIndex.from_documents(
        documents, encoder=colpali_encoder, store=index.store, show_progress=False
    )
    assert again.last_report.pages_added == 0 and again.last_report.pages_unchanged == 5
    assert index.store.count() == 5


def test_pool_factor_pools_every_insert(documents, colpali_encoder, tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "pooled"))
    index = VisualDocumentIndex.from_documents(
        documents[:3], encoder=colpali_encoder, store=store, pool_factor=4, show_progress=False
    )
    page = Image.open(documents[0].resolve_image())
    (full,) = colpali_encoder.embed_images([page], show_progress=False)
    pooled_length = -(-len(full) // 4)
    (tmp_path / "extra").mkdir()
    write_text_pdf(tmp_path / "extra" / "slides.pdf", ["Roadmap"])
    assert index.ingest(tmp_path / "extra").pages_added == 1
    index.insert_nodes(documents[3:])
    assert store.pool_factor == 4 and store.count() == 6
    assert {len(v) for v in store.get_page_vectors(store.page_ids())} == {pooled_length}


def test_from_store_reopens_the_stored_pages(index, colpali_encoder):
    reopened = VisualDocumentIndex.from_store(
        LanceDBPageStore(uri=index.store.uri), encoder=colpali_encoder
    )
    assert reopened.store.count() == 5


def test_from_store_refuses_another_model(index, colqwen2_encoder):
    with pytest.raises(ModelMismatchError):
        VisualDocumentIndex.from_store(index.store, encoder=colqwen2_encoder)


@pytest.fixture
def slides(tmp_path):
    """A folder holding a 4-page slides.pdf."""
    (tmp_path / "extra").mkdir()
    write_text_pdf(tmp_path / "extra" / "slides.pdf", ["Roadmap", "Market", "Survey", "Team"])
    return tmp_path / "extra"


def test_ingest_adds_the_pages_of_a_folder(index, slides):
    report = index.ingest(slides)
    assert report.pages_added == 4 and index.store.count() == 9


def test_delete_ref_doc_deletes_every_page_of_the_document(index, slides):
    index.ingest(slides)
    pages = [n for n in index.store.get_nodes() if n.metadata["file_name"] == "slides.pdf"]
    index.delete_ref_doc(pages[0].metadata["doc_id"])
    assert index.store.count() == 5
    assert "slides.pdf" not in {n.metadata["file_name"] for n in index.store.get_nodes()}


def test_insert_one_page_document(index, tmp_path):
    write_text_pdf(tmp_path / "single.pdf", ["Appendix"])
    (page,) = PDFPageReader(dpi=36).load_data(tmp_path / "single.pdf")
    index.insert(page)
    assert index.store.count() == 6
    assert index.store.get_nodes([page.id_])[0].metadata["file_name"] == "single.pdf"


def test_as_retriever_returns_our_retriever(index):
    retriever = index.as_retriever(similarity_top_k=2)
    assert isinstance(retriever, ColPaliRetriever)
    hits = retriever.retrieve("revenue")
    assert len(hits) == 2
    assert {"file_name", "page_number"} <= set(hits[0].node.metadata)


def test_query_engine_answers_from_the_retrieved_page_images(index, llava):
    engine = index.as_query_engine(llm=llava, similarity_top_k=2)
    assert isinstance(engine, RetrieverQueryEngine)
    response = engine.query("What was the 2023 revenue?")
    assert isinstance(response, Response) and isinstance(response.response, str)
    assert len(response.source_nodes) == 2
    for hit in response.source_nodes:
        assert hit.node.image  # the page image travels with the source node
        assert hit.score is not None


def test_cited_pages_label_each_source_page_best_first(index, llava):
    response = index.as_query_engine(llm=llava, similarity_top_k=2).query("2023 revenue?")
    labels = cited_pages(response)
    assert labels[0].startswith(
        f"{response.source_nodes[0].node.metadata['file_name']}, page "
        f"{response.source_nodes[0].node.metadata['page_number']} (score "
    )


def test_streaming_equals_plain_greedy_answer(index, llava):
    plain = index.as_query_engine(llm=llava, similarity_top_k=2).query("revenue?")
    streamed = index.as_query_engine(llm=llava, similarity_top_k=2, streaming=True).query(
        "revenue?"
    )
    assert isinstance(streamed, StreamingResponse)
    assert "".join(streamed.response_gen) == plain.response


def test_async_query_equals_the_plain_answer(index, llava):
    plain = index.as_query_engine(llm=llava, similarity_top_k=2).query("revenue?")
    asynchronous = asyncio.run(
        index.as_query_engine(llm=llava, similarity_top_k=2).aquery("revenue?")
    )
    assert asynchronous.response == plain.response


def test_citation_engine_packs_pages_as_the_vlm_counts_them(index, llava):
    engine = index.as_query_engine(llm=llava, similarity_top_k=2, citations=True)
    assert isinstance(engine, CitationQueryEngine)
    synthesizer = engine._response_synthesizer
    # The VLM's page-count packing, not LlamaIndex's default 4096-token helper.
    assert synthesizer._chat_prompt_helper.chunk_size_limit == (
        llava.chat_prompt_helper().chunk_size_limit
    )


def test_citation_engine_asks_for_numbered_sources(index, llava):
    engine = index.as_query_engine(llm=llava, similarity_top_k=2, citations=True)
    prompts = engine.get_prompts()
    assert "Source 1" in prompts["response_synthesizer:chat_content_qa_template"].get_template()


def test_citation_engine_sources_are_the_retrieved_pages(index, llava):
    engine = index.as_query_engine(llm=llava, similarity_top_k=2, citations=True)
    response = engine.query("What was the 2023 revenue?")
    assert [n.node.metadata["page_number"] for n in response.source_nodes]
    assert all(n.node.metadata.get("file_name") for n in response.source_nodes)


def test_settings_llm_is_used_when_no_llm_is_given(index, llava, monkeypatch):
    monkeypatch.setattr(Settings, "_llm", llava)
    calls = []
    original = type(llava).chat
    monkeypatch.setattr(
        type(llava), "chat", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    index.as_query_engine(similarity_top_k=1).query("revenue?")
    assert calls


def test_chat_engine_answers_follow_ups(index, llava):
    chat = index.as_chat_engine(llm=llava, similarity_top_k=1)
    first = chat.chat("What was the revenue?")
    second = chat.chat("And the costs?")
    assert isinstance(first.response, str) and isinstance(second.response, str)
    assert len(chat.chat_history) == 4


def test_documents_need_an_encoder(documents):
    with pytest.raises(TypeError, match="needs encoder"):
        VisualDocumentIndex.from_documents(documents)


QUESTION = "What was the 2023 revenue?"


@pytest.fixture
def highlighted(index, llava):
    """A response to QUESTION and the regions highlight_sources found on its pages."""
    from llama_index_vlm.index import highlight_sources

    response = index.as_query_engine(llm=llava, similarity_top_k=2).query(QUESTION)
    return response, highlight_sources(response, index.encoder, QUESTION)


def test_highlight_sources_finds_a_region_inside_each_cited_page(highlighted):
    from llama_index_vlm.images import decode_image
    from llama_index_vlm.interpretability import draw_region

    response, regions = highlighted
    assert len(regions) == len(response.source_nodes) == 2
    for hit, region in zip(response.source_nodes, regions, strict=True):
        page = decode_image(hit.node.image)
        left, top, right, bottom = region
        assert 0 <= left < right <= page.width and 0 <= top < bottom <= page.height
        drawn = draw_region(page, region, width=2)
        assert drawn.getpixel((left, top + 1)) == (255, 0, 0)


def test_highlight_sources_keeps_the_region_on_the_node_hidden_from_the_llm(highlighted):
    response, regions = highlighted
    for hit, region in zip(response.source_nodes, regions, strict=True):
        assert hit.node.metadata["answer_region"] == list(region)
        assert "answer_region" in hit.node.excluded_llm_metadata_keys
