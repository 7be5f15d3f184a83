"""The context window (vlm/context.py): an overflowing prompt is refused with its numbers or
loses its last pages; a window over the model's is lowered; pages are packed by count."""

from __future__ import annotations

import pytest
from chats import COLOURS, PAGE_SIZES, expected_image_tokens, image_tokens, question, variant
from PIL import Image

from llama_index_vlm.errors import ContextWindowExceededError

DROPPED = r"dropped 2 page image\(s\) \(report.pdf, page 3; report.pdf, page 4\)"


def test_context_window_overflow_is_an_error_with_the_numbers(vlms):
    vlm = vlms("llava")
    usage = vlm.chat(question(4)).additional_kwargs
    small = variant(vlm, context_window=usage["prompt_tokens"] - 20)
    n_image_tokens = sum(expected_image_tokens(vlm, "llava", size) for size in PAGE_SIZES)
    with pytest.raises(ContextWindowExceededError) as e:
        small.chat(question(4))
    assert f"{n_image_tokens} image tokens for 4 image(s)" in str(e.value)
    assert f"context window of {usage['prompt_tokens'] - 20} tokens" in str(e.value)
    assert "drop_pages_to_fit=True" in str(e.value)


@pytest.fixture
def two_pages_too_many(vlms):
    """A LLaVA with drop_pages_to_fit whose window holds the prompt with two of 4 pages."""
    vlm = vlms("llava")
    usage = vlm.chat(question(4)).additional_kwargs
    per_page = expected_image_tokens(vlm, "llava", PAGE_SIZES[0])
    # Room for the prompt with two pages fewer (and the answer).
    room = usage["prompt_tokens"] - 2 * per_page + vlm.max_new_tokens
    return variant(vlm, context_window=room, drop_pages_to_fit=True)


def test_drop_pages_to_fit_warns_naming_the_dropped_pages(two_pages_too_many):
    with pytest.warns(UserWarning, match=DROPPED):
        two_pages_too_many.chat(question(4))


def test_drop_pages_to_fit_keeps_the_first_best_ranked_pages(two_pages_too_many, seen):
    fitted = two_pages_too_many
    calls = seen(fitted)
    with pytest.warns(UserWarning, match=DROPPED):
        response = fitted.chat(question(4))
    assert response.additional_kwargs["images"] == 2
    per_page = expected_image_tokens(fitted, "llava", PAGE_SIZES[0])
    assert image_tokens(fitted, calls[0]) == 2 * per_page
    reference = fitted.processor.image_processor(
        [
            Image.new("RGB", size, colour)
            for size, colour in zip(PAGE_SIZES[:2], COLOURS[:2], strict=True)
        ],
        return_tensors="pt",
    )["pixel_values"]
    assert (calls[0]["pixel_values"] == reference).all()  # the first pages are the ones kept


def test_drop_pages_to_fit_still_refuses_when_one_page_does_not_fit(vlms):
    vlm = variant(vlms("llava"), context_window=20, drop_pages_to_fit=True)
    with pytest.raises(ContextWindowExceededError, match="even with one page left"):
        vlm.chat(question(3))


def test_context_window_above_the_models_is_lowered_with_a_warning(vlms):
    vlm = vlms("blip2")
    with pytest.warns(UserWarning, match="more than"):
        larger = variant(vlm, context_window=10**6)
    assert larger.context_window == vlm.model.config.get_text_config().max_position_embeddings


# -- chat_prompt_helper: packing pages by count ----------------------------------------------


def test_the_page_packing_helper_leaves_room_for_the_answer(vlms):
    llava = vlms("llava")
    assert llava.chat_prompt_helper(pages_per_call=2).num_output == llava.max_new_tokens


def test_the_page_packing_helper_fits_as_many_pages_as_asked(vlms):
    helper = vlms("llava").chat_prompt_helper(pages_per_call=2)
    # LlamaIndex's estimate of one image, so two pages and their text fit, three do not.
    assert 2 * 2125 < helper.chunk_size_limit < 3 * 2125


def test_the_default_page_packing_fits_more_pages_than_two_on_llava(vlms):
    llava = vlms("llava")
    default = llava.chat_prompt_helper().chunk_size_limit
    assert default > llava.chat_prompt_helper(pages_per_call=2).chunk_size_limit


def test_the_page_packing_helper_needs_at_least_one_page(vlms):
    with pytest.raises(ValueError, match="at least 1"):
        vlms("llava").chat_prompt_helper(pages_per_call=0)
