"""The context window: what a prompt of page images costs in tokens, and making it fit.

A vision-language model attends to its prompt, the prompt's image tokens (LLaVA-1.5: 576 a
page, PaliGemma-448: 1024, BLIP-2: 32 query tokens, Gemma 3: 256, SmolVLM-256M: 64 per tile of
up to 17, LLaVA-NeXT and LLaVA-OneVision: more for larger pages, Qwen-VL: one per 28x28 or 32x32
pixels within the image budget) and its answer, all within its context window. Every model
call is tokenised before generation (:class:`Request`) and checked against the window: a call
that does not fit raises :class:`~llama_index_vlm.errors.ContextWindowExceededError` with the
numbers, or, when allowed, loses its last (lowest-ranked) pages until it fits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.indices.prompt_helper import ChatPromptHelper
from PIL import Image

from llama_index_vlm.errors import ContextWindowExceededError
from llama_index_vlm.images import encode_image
from llama_index_vlm.vlm.families import Family, PromptOptions, PromptSpec
from llama_index_vlm.vlm.messages import PageImage, Turn

# pages_prompt_helper(): the page a default is sized for, the real tokens kept for the system
# prompt and a QA or citation template, and LlamaIndex-estimated tokens kept for those templates
# (with a refine call's existing answer) when packing by page count.
_A4_AT_150_DPI = (1240, 1754)
_INSTRUCTIONS_ROOM = 512
_TEMPLATE_ROOM = 8192
_SINGLE_IMAGE_PAGES_PER_CALL = 16


@dataclass
class Request:
    """One model call, tokenised: what the model will see and what it costs."""

    inputs: Any
    label: str | None
    n_images: int
    image_tokens: int
    prompt_tokens: int


def model_context_window(config: Any) -> int:
    """The most tokens a model attends to, from its (text model's) config."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_WINDOW


def usable_context_window(requested: int | None, config: Any, name_or_path: str) -> int:
    """``requested`` (the model's maximum when None), lowered with a warning to that maximum."""
    limit = model_context_window(config)
    if requested is None:
        return limit
    if requested > limit:
        warnings.warn(
            f"context_window={requested} is more than {name_or_path!r} supports; using its "
            f"maximum, {limit}",
            UserWarning,
            stacklevel=3,
        )
        return limit
    return requested


def image_token_id(config: Any, processor: Any) -> int | None:
    """The token id that stands for image tokens in a prompt (None when the model has none)."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    token = getattr(processor, "image_token", None)
    if token is None:
        return None
    return processor.tokenizer.convert_tokens_to_ids(str(token))


def tokenise(family: Family, spec: PromptSpec, processor: Any, image_token: int | None) -> Request:
    """Run the family's processor on one call's prompt and images, and count what it costs."""
    inputs = family.encode(spec, processor)
    input_ids = inputs["input_ids"]
    image_tokens = 0 if image_token is None else int((input_ids == image_token).sum())
    return Request(
        inputs=inputs,
        label=spec.label,
        n_images=len(spec.images),
        image_tokens=image_tokens,
        prompt_tokens=int(input_ids.shape[1]),
    )


def fit(
    turns: list[Turn],
    requests_for: Callable[[list[Turn]], list[Request]],
    *,
    context_window: int,
    max_new_tokens: int,
    drop_pages: bool,
    name_or_path: str,
) -> list[Request]:
    """The requests for ``turns``, each within ``context_window`` with room for the answer.

    With ``drop_pages``, the conversation's last images (a retriever's lowest-scored pages) are
    dropped from ``turns`` one by one, with a warning, until every request fits.

    Raises:
        ContextWindowExceededError: a request does not fit (even with one page left).
    """
    dropped: list[str] = []
    while True:
        requests = requests_for(turns)
        longest = max(requests, key=lambda request: request.prompt_tokens)
        if longest.prompt_tokens + max_new_tokens <= context_window:
            break
        if not (drop_pages and sum(len(turn.images) for turn in turns) > 1):
            raise ContextWindowExceededError(
                _overflow_message(longest, max_new_tokens, context_window, name_or_path, dropped)
            )
        dropped.append(_drop_last_image(turns))
    if dropped:
        warnings.warn(
            f"dropped {len(dropped)} page image(s) ({'; '.join(reversed(dropped))}) so the "
            f"prompt fits {name_or_path!r}'s context window: {longest.prompt_tokens} "
            f"prompt tokens ({longest.image_tokens} for {longest.n_images} image(s)) + "
            f"max_new_tokens={max_new_tokens} <= {context_window}",
            UserWarning,
            stacklevel=2,
        )
    return requests


def _overflow_message(
    request: Request, max_new_tokens: int, context_window: int, name_or_path: str, dropped: list
) -> str:
    text_tokens = request.prompt_tokens - request.image_tokens
    advice = (
        "even with one page left; shorten the question or lower max_new_tokens"
        if dropped
        else "ask about fewer pages, lower max_new_tokens, or pass drop_pages_to_fit=True "
        "to drop the lowest-ranked pages"
    )
    return (
        f"the prompt needs {request.prompt_tokens} tokens ({request.image_tokens} image "
        f"tokens for {request.n_images} image(s) + {text_tokens} text tokens) plus "
        f"max_new_tokens={max_new_tokens}, which is "
        f"{request.prompt_tokens + max_new_tokens} > the context window of "
        f"{context_window} tokens of {name_or_path!r}; {advice}"
    )


def _drop_last_image(turns: list[Turn]) -> str:
    # Retrievers list pages best first, so the last image of the conversation is the weakest.
    for turn in reversed(turns):
        if turn.images:
            return turn.drop_last_image().label
    raise AssertionError("no image to drop")  # callers check there is more than one


def default_pages_per_call(
    family: Family,
    processor: Any,
    image_token: int | None,
    context_window: int,
    max_new_tokens: int,
    options: PromptOptions,
) -> int:
    """Pages per call for a family: as many A4 pages as fit the window next to the answer and
    the instructions when one prompt holds several images (each page costing what it costs under
    ``options``' image budget), else 16 (one page per generation).
    """
    if not family.multi_image:
        return _SINGLE_IMAGE_PAGES_PER_CALL
    page = Image.new("RGB", _A4_AT_150_DPI, "white")
    specs = family.prompts([Turn("user", [PageImage(page, ""), "?"])], processor, options)
    per_page = max(1, tokenise(family, specs[0], processor, image_token).image_tokens)
    room = context_window - max_new_tokens - _INSTRUCTIONS_ROOM
    return max(1, room // per_page)


def pages_prompt_helper(pages_per_call: int, max_new_tokens: int) -> ChatPromptHelper:
    """A LlamaIndex ``ChatPromptHelper`` that packs ``pages_per_call`` pages into each call.

    LlamaIndex's multimodal synthesizers pack pages into calls with a ``ChatPromptHelper`` that
    counts every image as 2125 tokens whatever the model (LLaVA-1.5 spends 576, PaliGemma-448
    1024, BLIP-2 32). Packed by the model's real context window, a LLaVA-1.5 call would get one
    page at a time (the others through refine calls), and a model with less than about 2500
    tokens of context (BLIP-2) a page's text and its image in separate calls. This helper counts
    in LlamaIndex's own estimate of an image, so it packs by page count, each page's metadata
    text with its image; the model's real limit is enforced on the actual prompt (:func:`fit`).
    """
    if pages_per_call < 1:
        raise ValueError(f"pages_per_call must be at least 1, not {pages_per_call}")
    one_pixel = encode_image(Image.new("RGB", (1, 1)), "PNG")
    image_estimate = ImageBlock(image=one_pixel).estimate_tokens()
    # Less than one image's estimate of room for the pages' metadata text, so text never
    # lets one more page in, and an image is never split from its text.
    chunk_size = pages_per_call * image_estimate + image_estimate // 2
    return ChatPromptHelper(
        context_window=chunk_size + max_new_tokens + _TEMPLATE_ROOM,
        num_output=max_new_tokens,
        chunk_size_limit=chunk_size,
    )
