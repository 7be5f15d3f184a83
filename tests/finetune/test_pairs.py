"""Training pairs: the JSON Lines formats, the split, the page images and drafted pairs."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import ImageNode
from PIL import Image

from llama_index_vlm.errors import TrainingDataError
from llama_index_vlm.finetune.pairs import (
    PageImages,
    TrainingPair,
    draft_pairs,
    load_pairs,
    parse_pair,
    save_pairs,
    split_pairs,
)
from llama_index_vlm.store import LanceDBPageStore


def write_lines(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture
def page_store(tmp_path):
    """A page store holding two pages of document "doc": red page 1, blue page 2."""
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    nodes = []
    for number, colour in ((1, "red"), (2, "blue")):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 30), colour).save(buffer, format="PNG")
        nodes.append(
            ImageNode(
                id_=f"doc-p{number}",
                image=base64.b64encode(buffer.getvalue()).decode(),
                metadata={"doc_id": "doc", "page_number": number, "page_count": 2},
            )
        )
    store.add(nodes, page_vectors=[np.ones((2, 4), np.float32)] * 2)
    return store


def test_doc_id_and_page_number_name_the_page_id():
    pair = parse_pair({"query": "revenue", "doc_id": "abc", "page_number": 3})
    assert pair.page_id == "abc-p3" and pair.image is None


def test_an_image_path_is_read_from_the_pairs_file_folder(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [{"query": "bike", "image": "photos/bike.jpg"}])
    (pair,) = load_pairs(path)
    assert pair.image == str(tmp_path / "photos" / "bike.jpg")


def test_a_page_named_two_ways_is_refused():
    with pytest.raises(TrainingDataError, match="exactly one"):
        parse_pair({"query": "q", "page_id": "a-p1", "image": "x.png"})


def test_a_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "a", "page_id": "d-p1"}\n\nnot json\n')
    with pytest.raises(TrainingDataError, match=r"pairs.jsonl:3: not JSON"):
        load_pairs(path)


def test_a_pair_without_a_query_is_refused():
    with pytest.raises(TrainingDataError, match='"query" must be a non-empty string'):
        parse_pair({"query": "  ", "page_id": "d-p1"})


def test_pairs_round_trip_through_a_file(tmp_path):
    pairs = [
        TrainingPair("revenue", page_id="d-p1", negative_page_id="d-p2"),
        TrainingPair("a bike", image=str(tmp_path / "bike.jpg"), synthetic=True),
    ]
    assert load_pairs(save_pairs(pairs, tmp_path / "pairs.jsonl")) == pairs


def test_the_split_is_complete_disjoint_and_fixed_by_the_seed():
    pairs = [TrainingPair(f"q{i}", page_id=f"d-p{i}") for i in range(1, 11)]
    train, held_out = split_pairs(pairs, eval_fraction=0.3, seed=7)
    assert len(held_out) == 3 and sorted(train + held_out, key=lambda p: p.query) == sorted(
        pairs, key=lambda p: p.query
    )
    assert split_pairs(pairs, eval_fraction=0.3, seed=7) == (train, held_out)


def test_two_pairs_split_into_one_and_one():
    pairs = [TrainingPair("a", page_id="d-p1"), TrainingPair("b", page_id="d-p2")]
    train, held_out = split_pairs(pairs, eval_fraction=0.01)
    assert len(train) == len(held_out) == 1


def test_a_stored_page_is_read_from_the_store(page_store):
    image = PageImages(page_store).by_key("doc-p2")
    assert image.size == (20, 30) and image.getpixel((0, 0)) == (0, 0, 255)


def test_pages_missing_from_the_store_are_named(page_store):
    with pytest.raises(TrainingDataError, match=r"1 page\(s\).*doc-p9"):
        PageImages(page_store).check(["doc-p1", "doc-p9"])


def test_stored_pages_without_a_store_are_refused():
    with pytest.raises(TrainingDataError, match="give the store"):
        PageImages(None).check(["doc-p1"])


def test_a_missing_image_file_is_named(tmp_path):
    with pytest.raises(TrainingDataError, match="missing.png"):
        PageImages().check([TrainingPair("q", image=str(tmp_path / "missing.png")).page_key])


class QuestionLLM(MockLLM):
    """A LlamaIndex LLM that answers every page with a fixed question."""

    def chat(self, messages: list[ChatMessage], **kwargs) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content='"What is shown?"\nok'))


def test_drafted_pairs_are_marked_synthetic(page_store):
    pairs = draft_pairs(page_store, QuestionLLM(), show_progress=False)
    assert pairs == [
        TrainingPair("What is shown?", page_id="doc-p1", synthetic=True),
        TrainingPair("What is shown?", page_id="doc-p2", synthetic=True),
    ]
