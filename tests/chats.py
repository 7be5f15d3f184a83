"""Chats for the VLM tests: page images, the messages LlamaIndex sends, what the model saw."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from PIL import Image

if TYPE_CHECKING:
    from llama_index_vlm.vlm import HuggingFaceVLM

KINDS = ["llava", "llava_next", "paligemma", "blip2"]
MULTI_IMAGE_KINDS = ["llava", "llava_next"]
SINGLE_IMAGE_KINDS = ["paligemma", "blip2"]
# Differently sized pages: LLaVA-NeXT gives each its own number of any-resolution tiles.
PAGE_SIZES = [(60, 100), (120, 40), (64, 64), (90, 180)]
COLOURS = ["red", "green", "blue", "orange"]


def png_bytes(colour: str = "red", size: tuple[int, int] = (60, 100)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def page_blocks(n_pages: int) -> list:
    """What LlamaIndex's multimodal synthesizer sends: each page's metadata, then its image."""
    blocks = []
    for index in range(n_pages):
        blocks.append(TextBlock(text=f"file_name: report.pdf\npage_number: {index + 1}"))
        blocks.append(ImageBlock(image=png_bytes(COLOURS[index], PAGE_SIZES[index])))
    return blocks


def question(n_pages: int, text: str = "What is the total revenue?") -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[*page_blocks(n_pages), TextBlock(text=text)])]


def variant(vlm: HuggingFaceVLM, **settings) -> HuggingFaceVLM:
    """The same loaded model with other settings (no second load)."""
    from llama_index_vlm.vlm import HuggingFaceVLM

    config = {**vlm.to_dict(), **settings}
    config.pop("class_name")
    return HuggingFaceVLM(model=vlm.model, processor=vlm.processor, **config)


def image_tokens(vlm: HuggingFaceVLM, call: dict) -> int:
    """The image tokens in one ``model.generate`` call's prompt."""
    return int((call["input_ids"] == vlm.model.config.image_token_id).sum())


def prompt_text(vlm: HuggingFaceVLM, call: dict) -> str:
    return vlm.processor.tokenizer.decode(call["input_ids"][0])


def expected_image_tokens(vlm: HuggingFaceVLM, kind: str, size: tuple[int, int]) -> int:
    """Image tokens of one page, from the config or processor, as transformers computes them."""
    config = vlm.model.config
    if kind == "llava":
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        # The "default" strategy drops the CLS token, "full" keeps it.
        return patches + (config.vision_feature_select_strategy == "full")
    if kind == "llava_next":
        width, height = size
        counts = vlm.processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
        return counts.num_image_tokens[0]
    if kind == "paligemma":
        return (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return config.num_query_tokens  # BLIP-2: the Q-Former's query tokens
