"""HuggingFaceVLM under LlamaIndex's own multimodal query engines.

``RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)`` and
``CitationQueryEngine.from_args(..., multimodal=True)``, plain, streaming, async and async
streaming, over a retriever that returns page ``ImageNode`` s exactly as the ColPali retriever
does. The tests check that the response's source nodes are the retrieved pages and that the
model really saw every page's image tokens and pixels.
"""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
import torch
from chats import image_tokens
from llama_index.core import QueryBundle, Settings
from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import ImageNode, NodeWithScore
from PIL import Image

from llama_index_vlm.vlm import HuggingFaceVLM

QUESTION = "What was the total revenue in 2023?"
PAGES = [  # (file_name, page_number, colour, size, score), best first as a retriever ranks them
    ("report.pdf", 3, "red", (60, 100), 0.91),
    ("report.pdf", 7, "green", (120, 40), 0.74),
    ("slides.pdf", 1, "blue", (64, 64), 0.52),
]
MODES = ["sync", "stream", "async", "async_stream"]


def page_image(colour: str, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


class PageRetriever(BaseRetriever):
    """Returns fixed pages as the ColPali retriever does: base64 PNG ImageNodes with metadata."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = []
        for file_name, page_number, colour, size, score in PAGES:
            buffer = io.BytesIO()
            page_image(colour, size).save(buffer, format="PNG")
            node = ImageNode(
                id_=f"{file_name}#{page_number}",
                image=base64.b64encode(buffer.getvalue()).decode(),
                image_mimetype="image/png",
                metadata={"file_name": file_name, "page_number": page_number},
            )
            nodes.append(NodeWithScore(node=node, score=score))
        return nodes

    def as_retriever(self, **kwargs) -> PageRetriever:
        # CitationQueryEngine.from_args takes an index first and calls index.as_retriever();
        # a retriever that returns itself can be passed in the index's place.
        return self


@pytest.fixture(autouse=True)
def clean_settings():
    """Tests set LlamaIndex's global Settings; restore them after each test."""
    saved = (Settings._llm, Settings._chat_prompt_helper)
    yield
    Settings._llm, Settings._chat_prompt_helper = saved


def make_engine(engine: str, vlm: HuggingFaceVLM | None, streaming: bool):
    llm = {} if vlm is None else {"llm": vlm}
    if engine == "retriever":
        return RetrieverQueryEngine.from_args(
            PageRetriever(), multimodal=True, streaming=streaming, **llm
        )
    return CitationQueryEngine.from_args(
        PageRetriever(), multimodal=True, streaming=streaming, **llm
    )


def ask(engine_kind: str, vlm: HuggingFaceVLM | None, mode: str):
    """Query through one mode; returns (response, answer text)."""
    engine = make_engine(engine_kind, vlm, streaming=mode.endswith("stream"))
    if mode == "sync":
        response = engine.query(QUESTION)
        return response, str(response)
    if mode == "stream":
        response = engine.query(QUESTION)
        return response, "".join(response.response_gen)

    async def run():
        response = await engine.aquery(QUESTION)
        if mode == "async":
            return response, str(response)
        return response, "".join([token async for token in response.async_response_gen()])

    return asyncio.run(run())


def one_page_tokens(vlm: HuggingFaceVLM, size: tuple[int, int]) -> int:
    """Image tokens of one page, from the processor: the prompt of that page alone."""
    # BLIP-2's processor adds its query tokens itself; the others expand one placeholder.
    placeholder = "" if vlm.family == "BLIP-2" else str(vlm.processor.image_token)
    inputs = vlm.processor(
        images=[page_image("white", size)], text=f"{placeholder}?", return_tensors="pt"
    )
    return int((inputs["input_ids"] == vlm.model.config.image_token_id).sum())


def page_pixels(vlm: HuggingFaceVLM, colour: str, size: tuple[int, int]) -> torch.Tensor:
    return vlm.processor.image_processor([page_image(colour, size)], return_tensors="pt")[
        "pixel_values"
    ][0]


def assert_sources_are_the_pages(response, engine_kind: str) -> None:
    sources = response.source_nodes
    assert [(s.node.metadata["file_name"], s.node.metadata["page_number"]) for s in sources] == [
        (file_name, page_number) for file_name, page_number, *_ in PAGES
    ]
    assert [s.score for s in sources] == [score for *_, score in PAGES]
    if engine_kind == "retriever":
        assert [s.node.node_id for s in sources] == [f"{f}#{p}" for f, p, *_ in PAGES]
    else:  # one citation node per page, numbered, still holding the page's image
        assert [s.node.get_content().strip() for s in sources] == [
            "Source 1:",
            "Source 2:",
            "Source 3:",
        ]
        assert all(s.node.image_resource is not None for s in sources)


def assert_every_page_was_seen_once(vlm: HuggingFaceVLM, calls: list[dict]) -> None:
    expected = sorted(one_page_tokens(vlm, size) for *_, size, _ in PAGES)
    if vlm.family == "LLaVA-NeXT":
        # Any-resolution pages have different token counts; each prompt's total is a sum of
        # whole pages', and all prompts together hold each page once.
        assert sum(image_tokens(vlm, call) for call in calls) == sum(expected)
        assert sum(call["pixel_values"].shape[0] for call in calls) == len(PAGES)
        return
    seen_pixels = [pixels for call in calls for pixels in call["pixel_values"]]
    assert sum(image_tokens(vlm, call) for call in calls) == sum(expected)
    assert len(seen_pixels) == len(PAGES)
    for _, _, colour, size, _ in PAGES:
        reference = page_pixels(vlm, colour, size)
        assert sum(bool(torch.equal(pixels, reference)) for pixels in seen_pixels) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_stock_engines_answer_from_every_page_once(mode, engine_kind, kind, vlms, seen):
    """LlamaIndex's engines as they come: its prompt helper counts each image as 2125 tokens,
    so on a 4096-token LLaVA each call gets one page and refine carries the answer on."""
    vlm = vlms(kind)
    calls = seen(vlm)
    response, _ = ask(engine_kind, vlm, mode)
    assert_sources_are_the_pages(response, engine_kind)
    assert_every_page_was_seen_once(vlm, calls)
    assert len(calls) == len(PAGES)


@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_stock_engines_give_the_same_greedy_answer_in_every_mode(engine_kind, kind, vlms):
    answers = {mode: ask(engine_kind, vlms(kind), mode)[1] for mode in MODES}
    assert len(set(answers.values())) == 1, answers


def ask_with_page_packing(vlm: HuggingFaceVLM, engine_kind: str, mode: str, calls: list):
    """Query with vlm.chat_prompt_helper() set; checks the sources and that every page was
    seen once, and returns the answer."""
    Settings.chat_prompt_helper = vlm.chat_prompt_helper()
    response, answer = ask(engine_kind, vlm, mode)
    assert_sources_are_the_pages(response, engine_kind)
    assert_every_page_was_seen_once(vlm, calls)
    return answer


@pytest.mark.parametrize("mode", ["sync", "async_stream"])
@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_page_packing_helper_sends_all_pages_in_one_call(mode, engine_kind, kind, vlms, seen):
    """With vlm.chat_prompt_helper() LLaVA families get every page in one prompt."""
    calls = seen(vlms(kind))
    ask_with_page_packing(vlms(kind), engine_kind, mode, calls)
    assert len(calls) == 1


@pytest.mark.parametrize("mode", ["sync", "async_stream"])
@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
@pytest.mark.parametrize("kind", ["paligemma", "blip2"])
def test_page_packing_helper_asks_single_image_models_page_by_page(
    mode, engine_kind, kind, vlms, seen
):
    """PaliGemma and BLIP-2 get one prompt per page, answers filed under each page's label."""
    calls = seen(vlms(kind))
    answer = ask_with_page_packing(vlms(kind), engine_kind, mode, calls)
    assert len(calls) == len(PAGES)
    labels = [line.split(": ")[0] for line in answer.split("\n")]
    pages = [f"{file_name}, page {number}" for file_name, number, *_ in PAGES]
    if engine_kind == "citation":
        pages = [f"Source {n} ({page})" for n, page in enumerate(pages, start=1)]
    assert labels == pages


@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
@pytest.mark.parametrize("kind", ["llava", "llava_next", "paligemma", "blip2"])
def test_page_packing_gives_the_same_answer_streamed_async(engine_kind, kind, vlms):
    vlm = vlms(kind)
    Settings.chat_prompt_helper = vlm.chat_prompt_helper()
    assert ask(engine_kind, vlm, "sync")[1] == ask(engine_kind, vlm, "async_stream")[1]


@pytest.mark.parametrize("engine_kind", ["retriever", "citation"])
def test_settings_llm_is_used_when_no_llm_is_given(engine_kind, vlms, seen):
    vlm = vlms("llava")
    Settings.llm = vlm
    Settings.chat_prompt_helper = vlm.chat_prompt_helper()
    calls = seen(vlm)
    response, _ = ask(engine_kind, None, "sync")
    assert_sources_are_the_pages(response, engine_kind)
    assert len(calls) == 1


def test_citation_engine_takes_the_retriever_by_keyword(vlms, seen):
    vlm = vlms("llava")
    calls = seen(vlm)
    engine = CitationQueryEngine.from_args(
        None, retriever=PageRetriever(), llm=vlm, multimodal=True
    )
    assert_sources_are_the_pages(engine.query(QUESTION), "citation")
    assert_every_page_was_seen_once(vlm, calls)


def test_without_the_helper_a_small_context_separates_pages_from_their_text(vlms):
    """Why chat_prompt_helper() exists: LlamaIndex packs a 2048-token PaliGemma by its
    2125-token image estimate, splits each page's metadata text from its image, and sends the
    text alone. HuggingFaceVLM refuses an image-less call to an image-only family clearly."""
    from llama_index_vlm.errors import EmptyInputError

    with pytest.raises(EmptyInputError, match="PaliGemma answers questions about an image"):
        ask("retriever", vlms("paligemma"), "stream")
