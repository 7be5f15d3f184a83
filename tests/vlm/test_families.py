"""Each family's prompts (vlm/families.py), as the tiny models receive them: the chat template
or task format, the image tokens of every page, and several pages for one-image families."""

from __future__ import annotations

import pytest
from chats import (
    KINDS,
    MULTI_IMAGE_KINDS,
    PAGE_SIZES,
    SINGLE_IMAGE_KINDS,
    expected_image_tokens,
    image_tokens,
    pages_conversation,
    plain_inputs,
    png_bytes,
    prompt_text,
    question,
    variant,
)
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

from llama_index_vlm.errors import EmptyInputError

# -- several pages ---------------------------------------------------------------------------


def _ask_about_three_pages(vlm, seen):
    """The response to a question about 3 pages, and the model calls that answered it."""
    calls = seen(vlm)
    several = vlm.chat(question(3))
    assert several.additional_kwargs["images"] == 3
    return several, calls


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_multi_image_families_see_every_page_in_one_prompt(kind, vlms, seen):
    several, calls = _ask_about_three_pages(vlms(kind), seen)
    assert len(calls) == 1
    assert several.additional_kwargs["model_calls"] == 1


@pytest.mark.parametrize("kind", SINGLE_IMAGE_KINDS)
def test_single_image_families_ask_each_page_and_label_its_answer(kind, vlms, seen):
    several, calls = _ask_about_three_pages(vlms(kind), seen)
    assert len(calls) == 3  # per_page: one prompt per page, answers filed under its label
    lines = several.message.content.split("\n")
    assert [line.split(":")[0] for line in lines] == [
        f"report.pdf, page {number}" for number in (1, 2, 3)
    ]


@pytest.mark.parametrize("kind", SINGLE_IMAGE_KINDS)
def test_tile_strategy_asks_once_about_a_grid_of_the_pages(kind, vlms, seen):
    vlm = variant(vlms(kind), multi_image_strategy="tile")
    calls = seen(vlm)
    response = vlm.chat(question(3))
    assert len(calls) == 1 and calls[0]["pixel_values"].shape[0] == 1
    assert image_tokens(vlm, calls[0]) == expected_image_tokens(vlm, kind, (0, 0))
    assert not response.message.content.startswith("report.pdf")  # one answer, no labels


def test_a_single_image_family_refuses_a_question_without_an_image(vlms):
    with pytest.raises(EmptyInputError, match="PaliGemma answers questions about an image"):
        vlms("paligemma").chat([ChatMessage(role="user", content="What?")])


# -- image tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_page_carries_the_image_tokens_transformers_counts_for_it(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    response = vlm.chat(question(1))
    expected = expected_image_tokens(vlm, kind, PAGE_SIZES[0])
    assert [image_tokens(vlm, call) for call in calls] == [expected]
    assert response.additional_kwargs["image_tokens"] == expected


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_three_pages_carry_the_image_tokens_of_the_model_cards_prompt(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    response = vlm.chat(question(3))
    expected = image_tokens(vlm, plain_inputs(vlm, pages_conversation(3)))
    assert [image_tokens(vlm, call) for call in calls] == [expected]
    assert response.additional_kwargs["image_tokens"] == expected


@pytest.mark.parametrize("kind", SINGLE_IMAGE_KINDS)
def test_each_page_call_carries_its_pages_image_tokens(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    response = vlm.chat(question(3))
    per_page = [expected_image_tokens(vlm, kind, size) for size in PAGE_SIZES[:3]]
    assert [image_tokens(vlm, call) for call in calls] == per_page
    assert response.additional_kwargs["image_tokens"] == sum(per_page)


def test_llava_next_gives_each_page_tokens_by_its_size(vlms):
    vlm = vlms("llava_next")
    per_page = [expected_image_tokens(vlm, "llava_next", size) for size in PAGE_SIZES[:3]]
    assert len(set(per_page)) > 1  # any-resolution: the count follows the page's size


# -- conversations ---------------------------------------------------------------------------


def _second_turn() -> list[ChatMessage]:
    first = ChatMessage(
        role="user",
        blocks=[ImageBlock(image=png_bytes("red", (60, 100))), TextBlock(text="What is it?")],
    )
    return [
        first,
        ChatMessage(role="assistant", content="A red page."),
        ChatMessage(role="user", content="And its title?"),
    ]


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_second_turn_still_shows_the_first_turns_image(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.chat(_second_turn()[:1])
    vlm.chat(_second_turn())
    first_tokens, second_tokens = (image_tokens(vlm, call) for call in calls)
    assert second_tokens == first_tokens == expected_image_tokens(vlm, kind, (60, 100))


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_second_turn_prompt_holds_the_first_exchange_in_order(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.chat(_second_turn())
    text = prompt_text(vlm, calls[0])
    assert "A red page." in text and text.index("What is it?") < text.index("And its title?")


def _blip2_second_turn() -> list[ChatMessage]:
    return [
        ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text="Q1?")]),
        ChatMessage(role="assistant", content="A1."),
        ChatMessage(role="user", content="Q2?"),
    ]


def test_blip2_second_turn_keeps_the_image(vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat(_blip2_second_turn())
    assert image_tokens(vlm, calls[0]) == vlm.model.config.num_query_tokens


def test_blip2_second_turn_asks_after_the_first_exchange(vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat(_blip2_second_turn())
    assert prompt_text(vlm, calls[0]).endswith("Question: Q1? Answer: A1. Question: Q2? Answer:")


# -- prompt formats --------------------------------------------------------------------------


def _paligemma_prompt(vlm, seen, messages) -> str:
    """The text PaliGemma was given for ``messages``, after its image tokens and <bos>."""
    calls = seen(vlm)
    vlm.chat(messages)
    tokenizer = vlm.processor.tokenizer
    image_prefix = vlm.processor.image_token * vlm.processor.image_seq_length + tokenizer.bos_token
    text = prompt_text(vlm, calls[-1])
    assert text.startswith(image_prefix)
    return text.removeprefix(image_prefix)


def _with_system(text: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are an expert Q&A system."),
        ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text=text)]),
    ]


def test_paligemma_asks_a_question_as_an_answer_task_without_system_text(vlms, seen):
    prompt = _paligemma_prompt(vlms("paligemma"), seen, _with_system("What is the total revenue?"))
    assert prompt == "answer en What is the total revenue?\n"


def test_paligemma_passes_a_task_prompt_as_it_is(vlms, seen):
    assert _paligemma_prompt(vlms("paligemma"), seen, _with_system("caption en")) == "caption en\n"


def test_paligemma_asks_only_the_question_of_a_llamaindex_qa_template(vlms, seen):
    wrapped = (
        "Context information is below.\n---\nGiven the context...\nQuery: How many units?\nAnswer:"
    )
    messages = [
        ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text=wrapped)])
    ]
    prompt = _paligemma_prompt(vlms("paligemma"), seen, messages)
    assert prompt == "answer en How many units?\n"


def test_paligemma_asks_in_the_task_language(vlms, seen):
    french = variant(vlms("paligemma"), task_language="fr")
    assert _paligemma_prompt(french, seen, question(1)) == "answer fr What is the total revenue?\n"


def test_blip2_gets_question_answer_prompts(vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat([ChatMessage(role="system", content="Be an expert."), *question(1)])
    image_token = getattr(vlm.processor.image_token, "content", vlm.processor.image_token)
    query_tokens = image_token * vlm.model.config.num_query_tokens
    assert (
        prompt_text(vlm, calls[0]) == f"{query_tokens}Question: What is the total revenue? Answer:"
    )
