"""Chats for the VLM tests: page images, the messages LlamaIndex sends, what the model saw."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from PIL import Image

if TYPE_CHECKING:
    from llama_index_vlm.vlm import HuggingFaceVLM

#: Every answer family's tiny checkpoint kind.
KINDS = [
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "smolvlm",
    "idefics3",
    "gemma3",
    "paligemma",
    "blip2",
]
#: Families that see every page in one prompt (through their chat template).
MULTI_IMAGE_KINDS = [kind for kind in KINDS if kind not in ("paligemma", "blip2")]
#: Families that see one image per prompt (task prompts).
SINGLE_IMAGE_KINDS = ["paligemma", "blip2"]
#: One family of each code path, for the LLM-interface tests (streaming, async, settings):
#: chat templates, chat templates with an image budget, task prompts, an encoder-free Q-Former.
INTERFACE_KINDS = ["llava", "llava_next", "qwen2_5_vl", "paligemma", "blip2"]
#: The Qwen-VL families: image tokens follow the page's pixels, within an image budget.
QWEN_KINDS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
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


def pages_conversation(n_pages: int, text: str = "What is the total revenue?") -> list[dict]:
    """:func:`question` as the model card's code writes it for a chat template: each page's
    metadata, then its image, then the question, in one user message.
    """
    content: list[dict] = []
    for index in range(n_pages):
        content.append({"type": "text", "text": f"file_name: report.pdf\npage_number: {index + 1}"})
        content.append({"type": "image", "image": page_image(index)})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def plain_inputs(vlm: HuggingFaceVLM, conversation: list[dict]) -> dict:
    """What the model card's code gives ``model.generate`` for a chat-template conversation."""
    return vlm.processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def page_image(index: int) -> Image.Image:
    """The ``index``-th page of :func:`question`, decoded."""
    return Image.open(io.BytesIO(png_bytes(COLOURS[index], PAGE_SIZES[index]))).convert("RGB")


def prompt_text(vlm: HuggingFaceVLM, call: dict) -> str:
    return vlm.processor.tokenizer.decode(call["input_ids"][0])


def expected_image_tokens(vlm: HuggingFaceVLM, kind: str, size: tuple[int, int]) -> int:
    """Image tokens of one page, from the config or processor, as transformers computes them."""
    config = vlm.model.config
    if kind == "llava":
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        # The "default" strategy drops the CLS token, "full" keeps it.
        return patches + (config.vision_feature_select_strategy == "full")
    if kind in ("llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        # transformers' own count of one image's tokens (LLaVA-OneVision: shown alone; with
        # other images it shows each at its base resolution).
        width, height = size
        counts = vlm.processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
        return counts.num_image_tokens[0]
    if kind == "gemma3":
        return config.mm_tokens_per_image
    if kind in ("smolvlm", "idefics3"):  # tiles (and the global image) x tokens per tile
        tiles = vlm.processor.image_processor([Image.new("RGB", size)], return_row_col_info=True)
        rows, cols = tiles["rows"][0][0], tiles["cols"][0][0]
        return (rows * cols + 1) * vlm.processor.image_seq_len
    if kind == "paligemma":
        return (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return config.num_query_tokens  # BLIP-2: the Q-Former's query tokens
