"""Qwen-VL image budgets (min_pixels / max_pixels): what a page costs in image tokens, a
document-page default, and the budget counted where pages are packed into calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chats import QWEN_KINDS, image_tokens, variant
from PIL import Image

from llama_index_vlm.vlm.families import FAMILIES, QwenFamily, pixels_per_token

BIG_PAGE = Image.new("RGB", (400, 400), "white")


def _page_tokens(vlm, seen, page=BIG_PAGE) -> int:
    calls = seen(vlm)
    vlm.complete("What is the total?", image_documents=[page])
    return image_tokens(vlm, calls[-1])


def _qwen_processor(longest_edge: int, shortest_edge: int = 3136, patch: int = 14):
    image_processor = SimpleNamespace(
        size={"shortest_edge": shortest_edge, "longest_edge": longest_edge},
        patch_size=patch,
        merge_size=2,
    )
    return SimpleNamespace(image_processor=image_processor)


def test_the_default_budget_caps_a_released_qwen_checkpoint_at_1280_tokens_a_page():
    processor = _qwen_processor(longest_edge=16384 * 28 * 28)  # Qwen2.5-VL's own maximum
    size = FAMILIES["qwen2_5_vl"].images_kwargs(processor, None, None)["size"]
    assert size == {"shortest_edge": 3136, "longest_edge": QwenFamily.DOCUMENT_PAGE_TOKENS * 784}


def test_the_default_budget_keeps_a_checkpoints_lower_maximum():
    processor = _qwen_processor(longest_edge=256 * 28 * 28)
    size = FAMILIES["qwen2_vl"].images_kwargs(processor, None, None)["size"]
    assert size["longest_edge"] == 256 * 28 * 28


def test_qwen3_vl_counts_tokens_of_32_pixels():
    assert pixels_per_token(_qwen_processor(1, patch=16)) == 32 * 32


@pytest.mark.parametrize("kind", QWEN_KINDS)
def test_max_pixels_caps_a_pages_image_tokens(kind, vlms, seen):
    vlm = vlms(kind)
    factor_pixels = pixels_per_token(vlm.processor)
    small = variant(vlm, max_pixels=4 * factor_pixels, min_pixels=factor_pixels)
    assert _page_tokens(small, seen) == 4  # a square page: 2x2 tokens
    assert _page_tokens(vlm, seen) > 4


@pytest.mark.parametrize("kind", QWEN_KINDS)
def test_min_pixels_enlarges_a_small_page(kind, vlms, seen):
    vlm = vlms(kind)
    tiny_page = Image.new("RGB", (8, 8), "white")
    larger = variant(vlm, min_pixels=16 * pixels_per_token(vlm.processor))
    assert _page_tokens(larger, seen, tiny_page) == 16 > _page_tokens(vlm, seen, tiny_page)


def test_a_smaller_budget_packs_more_pages_into_a_call(vlms):
    vlm = vlms("qwen2_vl")
    factor_pixels = pixels_per_token(vlm.processor)
    small = variant(vlm, max_pixels=4 * factor_pixels, min_pixels=factor_pixels)
    assert small.chat_prompt_helper().chunk_size_limit > vlm.chat_prompt_helper().chunk_size_limit


def test_the_budget_is_refused_for_a_family_without_one(vlms):
    with pytest.raises(ValueError, match="Qwen-VL"):
        variant(vlms("llava"), max_pixels=100_000)


def test_a_minimum_above_the_maximum_is_refused(vlms):
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        variant(vlms("qwen2_vl"), min_pixels=10_000, max_pixels=5_000)
