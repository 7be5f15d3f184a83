"""Query-side injection (issue 13): a query spelling a special token is read as text, and an
image query naming a special file is refused at once.
"""

from __future__ import annotations

import os
import threading

import pytest
from llama_index.core.schema import QueryBundle
from pdfs import write_numbered_pdf

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.special_tokens import BREAK, SpecialTokens
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture(params=["colpali", "colqwen2"])
def encoder(request, colpali_encoder, colqwen2_encoder):
    return colpali_encoder if request.param == "colpali" else colqwen2_encoder


@pytest.fixture
def retriever(tmp_path, encoder):
    write_numbered_pdf(tmp_path / "docs" / "report.pdf", 2)
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest(tmp_path / "docs", encoder, store, reader=PDFPageReader(dpi=36), show_progress=False)
    return ColPaliRetriever(encoder, store, similarity_top_k=2)


def _special_tokens(encoder) -> list[str]:
    return SpecialTokens(encoder.processor.tokenizer, (encoder.processor.image_token,)).tokens


def test_a_query_spelling_the_image_token_is_answered(retriever, encoder):
    hits = retriever.retrieve(f"revenue {encoder.processor.image_token} 2023")
    assert len(hits) == 2


def test_a_query_spelling_every_special_token_is_answered(retriever, encoder):
    assert len(retriever.retrieve(" ".join(_special_tokens(encoder)))) == 2


def test_no_special_token_of_a_query_reaches_the_model(encoder):
    query = "<image> " + " ".join(_special_tokens(encoder))
    plain = encoder.processor.process_queries(text=["x"])["input_ids"][0].tolist()
    spelled = encoder.processor.process_queries(text=[encoder._as_text(query)])
    ids = spelled["input_ids"][0].tolist()
    special_ids = set(encoder.processor.tokenizer.all_special_ids)
    # Only the processor's own special tokens (prefix, padding suffix) remain.
    assert sorted(i for i in ids if i in special_ids) == sorted(
        i for i in plain if i in special_ids
    )
    assert encoder.processor.image_token_id not in ids


def test_a_query_without_special_tokens_is_unchanged(encoder):
    assert encoder._as_text("What was the 2023 revenue?") == "What was the 2023 revenue?"


def test_a_spelled_special_token_keeps_its_letters():
    tokens = SpecialTokens(type("Tokenizer", (), {"all_special_tokens": ["<image>"]})())
    assert tokens.escape("<image><image>").replace(BREAK, "") == "<image><image>"


def test_query_token_labels_read_special_tokens_as_text(encoder):
    labels = encoder.query_token_labels("<image>")
    assert encoder.processor.image_token not in labels


def test_an_image_query_naming_a_fifo_is_refused_at_once(tmp_path, retriever):
    fifo = tmp_path / "query.png"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def query() -> None:
        try:
            retriever.retrieve(QueryBundle(query_str="", image_path=str(fifo)))
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome.append(error)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():  # unblock the reader before failing, so the thread ends
        with open(fifo, "wb"):
            pass
        pytest.fail("the image query blocked on a named pipe")
    assert len(outcome) == 1 and isinstance(outcome[0], UnreadableDocumentError)
    assert outcome[0].path == str(fifo)


@pytest.mark.parametrize(
    "name, writer, reason",
    [
        ("query.pdf", lambda p: write_numbered_pdf(p, 1), "must be an image file"),
        ("folder.png", lambda p: p.mkdir(), "is a directory"),
        ("query.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "not a valid"),
    ],
)
def test_an_image_query_that_is_no_image_is_refused(tmp_path, retriever, name, writer, reason):
    path = tmp_path / name
    writer(path)
    with pytest.raises(UnreadableDocumentError, match=reason):
        retriever.retrieve(QueryBundle(query_str="", image_path=str(path)))
