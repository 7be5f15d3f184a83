"""Per-family prompts: a conversation becomes the model calls each model family expects.

Most families answer through transformers' generic image-text-to-text convention: the model
loads with ``AutoModelForImageTextToText``, and the prompt is the processor's own chat template
applied to messages of ``{"type": "image"}`` and ``{"type": "text"}`` parts, in the conversation's
order (``processor.apply_chat_template(..., add_generation_prompt=True, tokenize=True)``), so a
prompt is exactly the one the model card's code builds. Every page of every turn goes into one
prompt: LLaVA 1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM,
Idefics3 and Gemma 3 (:class:`ChatTemplateFamily`; the Qwen families add an image budget,
:class:`QwenFamily`).

Two families keep their own prompt code, because their model cards demand it:

- **PaliGemma** (``paligemma``): a task prefix such as ``answer en <question>`` or
  ``caption en``, no chat template (the mix checkpoints were trained on big_vision's task
  prefixes, and ship no chat template); the processor adds the image tokens and ``<bos>``.
- **BLIP-2** (``blip-2``): ``Question: <question> Answer:`` (the format of its VQA fine-tuning;
  its checkpoints ship no chat template), earlier turns as ``Question: ... Answer: ...`` pairs.

Both see one image per prompt and were trained on bare questions: they get no system prompt and
only the question (:func:`~llama_index_vlm.vlm.questions.question_of` reads it out of
LlamaIndex's templates). For several pages ``multi_image_strategy`` decides: ``"per_page"`` asks
the question of each page (the answers are combined, each prefixed by its page's label),
``"tile"`` tiles the pages into one grid image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image

from llama_index_vlm.checkpoints import Architectures
from llama_index_vlm.errors import EmptyInputError, InvalidCheckpointError
from llama_index_vlm.vlm.messages import PageImage, Turn
from llama_index_vlm.vlm.questions import question_of, stock_prompt
from llama_index_vlm.vlm.tiling import tile_pages

MultiImageStrategy = Literal["per_page", "tile"]

#: The values of ``multi_image_strategy``.
MULTI_IMAGE_STRATEGIES: tuple[str, ...] = ("per_page", "tile")

# PaliGemma's task prefixes (big_vision's mix checkpoints): a prompt that already starts with one
# is passed as it is; any other text is a question, asked as ``answer <lang> <question>``.
_PALIGEMMA_TASK = re.compile(
    r"^(?:(?:caption|describe|answer|question) [a-z]{2,3}(?:[-_][A-Za-z]+)?\b"
    r"|ocr\b|detect |segment )"
)


@dataclass(frozen=True)
class PromptOptions:
    """How a family builds its prompts, from ``HuggingFaceVLM``'s settings."""

    multi_image_strategy: MultiImageStrategy = "per_page"
    language: str = "en"
    #: Keyword arguments of the image processor on every call (a Qwen image budget).
    images_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class PromptSpec:
    """One model call: its prompt (a chat conversation, or a task prompt's text), its images,
    and the page label its answer is filed under.

    ``label`` is set only when a question about several pages was split into one call per page.
    """

    images: list[Image.Image] = field(default_factory=list)
    #: Chat-template messages (images inline), for :class:`ChatTemplateFamily`.
    conversation: list[dict[str, Any]] | None = None
    #: The prompt's text, for families with task prompts (PaliGemma, BLIP-2).
    text: str | None = None
    label: str | None = None
    images_kwargs: Mapping[str, Any] = field(default_factory=dict)


class Family:
    """How one architecture is loaded and prompted. Subclasses are stateless singletons."""

    name: ClassVar[str]
    model_type: ClassVar[str]
    #: The transformers class that loads it.
    model_class: ClassVar[str] = "AutoModelForImageTextToText"
    #: Whether one prompt may hold several images.
    multi_image: ClassVar[bool]

    def check_processor(self, processor: Any, name_or_path: str) -> None:
        """Refuse a processor this family cannot build prompts with."""

    def images_kwargs(
        self, processor: Any, min_pixels: int | None, max_pixels: int | None
    ) -> dict[str, Any]:
        """The image processor's keyword arguments for an image budget (Qwen families only)."""
        if min_pixels is not None or max_pixels is not None:
            raise ValueError(
                f"min_pixels and max_pixels set the image budget of Qwen-VL models; {self.name} "
                "sizes its images itself (leave them unset)"
            )
        return {}

    def prompts(
        self, turns: list[Turn], processor: Any, options: PromptOptions
    ) -> list[PromptSpec]:
        """The model calls that answer the conversation's last user turn."""
        raise NotImplementedError

    def encode(self, spec: PromptSpec, processor: Any) -> Any:
        """Tokenise one call: the processor's ``BatchFeature`` of PyTorch tensors."""
        return processor(
            images=spec.images or None, text=spec.text, return_tensors="pt", **spec.images_kwargs
        )


class ChatTemplateFamily(Family):
    """A family prompted through its processor's own chat template, every page in one prompt."""

    multi_image = True

    def __init__(self, name: str, model_type: str) -> None:
        self.name = name
        self.model_type = model_type

    def check_processor(self, processor: Any, name_or_path: str) -> None:
        if not getattr(processor, "chat_template", None):
            raise InvalidCheckpointError(
                f"{name_or_path!r} is a {self.name} checkpoint whose processor has no chat "
                "template, and its prompts are built with it; use a checkpoint that ships one "
                "(an instruction-tuned one, e.g. '...-Instruct' or '...-it') or set "
                "processor.chat_template"
            )

    def prompts(self, turns, processor, options):
        images = [page.image for turn in turns for page in turn.images]
        return [
            PromptSpec(
                images=images,
                conversation=[_chat_message(turn) for turn in turns],
                images_kwargs=options.images_kwargs,
            )
        ]

    def encode(self, spec: PromptSpec, processor: Any) -> Any:
        import jinja2

        try:
            return _apply_chat_template(processor, spec.conversation, spec.images_kwargs)
        except jinja2.TemplateError:
            if spec.conversation[0]["role"] != "system":
                raise
            # Some templates refuse a system role: its text then opens the first user turn.
            folded = _fold_system(spec.conversation)
            return _apply_chat_template(processor, folded, spec.images_kwargs)


class QwenFamily(ChatTemplateFamily):
    """A Qwen-VL family: a page's image tokens follow its pixels, within an image budget.

    A Qwen-VL page costs one token per ``(patch_size * merge_size)**2`` pixels (28x28 for
    Qwen2-VL and Qwen2.5-VL, 32x32 for Qwen3-VL), between ``min_pixels`` and ``max_pixels``
    (the processor's ``size``: ``shortest_edge``/``longest_edge``, in pixels). The released
    checkpoints allow 16384 tokens a page; several pages in one prompt need a smaller budget,
    so by default a page gets at most :data:`DOCUMENT_PAGE_TOKENS` tokens (an A4 page at about
    100 dpi: small print stays legible), or the checkpoint's own maximum if that is lower.
    """

    #: The default most image tokens of one page.
    DOCUMENT_PAGE_TOKENS: ClassVar[int] = 1280

    def images_kwargs(self, processor, min_pixels, max_pixels):
        size = processor.image_processor.size
        shortest, longest = size["shortest_edge"], size["longest_edge"]
        if max_pixels is None:
            max_pixels = min(longest, self.DOCUMENT_PAGE_TOKENS * pixels_per_token(processor))
        if min_pixels is None:
            min_pixels = min(shortest, max_pixels)
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(
                f"the image budget needs 0 < min_pixels <= max_pixels, not min_pixels="
                f"{min_pixels}, max_pixels={max_pixels}"
            )
        return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}


def pixels_per_token(processor: Any) -> int:
    """The pixels of one Qwen-VL image token: ``(patch_size * merge_size) ** 2``."""
    image_processor = processor.image_processor
    return (int(image_processor.patch_size) * int(image_processor.merge_size)) ** 2


class _SingleImageFamily(Family):
    multi_image = False
    model_class: ClassVar[str]

    def prompts(self, turns, processor, options):
        pages = [page for turn in turns for page in turn.images]
        if not pages:
            stock = stock_prompt(turns[-1].text)
            if stock is not None and stock.template == "condense":
                raise EmptyInputError(
                    f"{self.name} answers questions about an image, and cannot rewrite a "
                    "conversation into a standalone question; use a chat engine that does not "
                    "condense (chat_mode='context'), or another model as the engine's llm"
                )
            raise EmptyInputError(
                f"{self.name} answers questions about an image, and the messages hold none; "
                "add an ImageBlock (or pass image_documents=...)"
            )
        text = self.prompt_text(turns, processor, options.language)
        if len(pages) == 1:
            return [PromptSpec(text=text, images=[pages[0].image])]
        if options.multi_image_strategy == "per_page":
            return [PromptSpec(text=text, images=[page.image], label=page.label) for page in pages]
        if options.multi_image_strategy == "tile":
            return [PromptSpec(text=text, images=[tile_pages([page.image for page in pages])])]
        raise ValueError(
            f"multi_image_strategy must be one of {MULTI_IMAGE_STRATEGIES}, "
            f"not {options.multi_image_strategy!r}"
        )

    def prompt_text(self, turns: list[Turn], processor: Any, language: str) -> str:
        raise NotImplementedError


class PaliGemmaFamily(_SingleImageFamily):
    """PaliGemma (``PaliGemmaForConditionalGeneration``): task prompts, one image."""

    name = "PaliGemma"
    model_type = "paligemma"
    model_class = "PaliGemmaForConditionalGeneration"

    def prompt_text(self, turns, processor, language):
        question = _question(turns[-1])
        task = question if _PALIGEMMA_TASK.match(question) else f"answer {language} {question}"
        # The image placeholder first, as the processor documents: it then expands it to the
        # image's tokens and adds <bos> after it (without it, it warns on every call).
        return f"{getattr(processor, 'image_token', '<image>')}{task}"

    def encode(self, spec, processor):
        inputs = super().encode(spec, processor)
        # PaliGemma's processor adds training labels; generate must not get them.
        inputs.pop("labels", None)
        return inputs


class Blip2Family(_SingleImageFamily):
    """BLIP-2 (``Blip2ForConditionalGeneration``): ``Question: ... Answer:`` prompts, one image."""

    name = "BLIP-2"
    model_type = "blip-2"
    model_class = "Blip2ForConditionalGeneration"

    def prompt_text(self, turns, processor, language):
        question = _question(turns[-1])
        if question.startswith("Question:"):
            return question if question.endswith("Answer:") else f"{question} Answer:"
        # Earlier turns as the question-answer pairs BLIP-2's chat prompts are made of.
        history = []
        for turn in turns[:-1]:
            if turn.role == "user" and turn.text:
                history.append(f"Question: {_question(turn)}")
            elif turn.role == "assistant" and turn.text:
                history.append(f"Answer: {_one_line(turn.text)}")
        return " ".join([*history, f"Question: {question} Answer:"])


#: Supported families by the ``model_type`` in a checkpoint's config.
FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        ChatTemplateFamily("LLaVA", "llava"),
        ChatTemplateFamily("LLaVA-NeXT", "llava_next"),
        ChatTemplateFamily("LLaVA-OneVision", "llava_onevision"),
        QwenFamily("Qwen2-VL", "qwen2_vl"),
        QwenFamily("Qwen2.5-VL", "qwen2_5_vl"),
        QwenFamily("Qwen3-VL", "qwen3_vl"),
        ChatTemplateFamily("SmolVLM", "smolvlm"),
        ChatTemplateFamily("Idefics3", "idefics3"),
        ChatTemplateFamily("Gemma 3", "gemma3"),
        PaliGemmaFamily(),
        Blip2Family(),
    )
}

#: The checkpoints ``HuggingFaceVLM`` loads: one model class per supported family.
VISION_LANGUAGE_MODELS = Architectures(
    classes={model_type: family.model_class for model_type, family in FAMILIES.items()},
    description="a supported vision-language model",
    examples=(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "llava-hf/llava-1.5-7b-hf",
    ),
    missing_weights_consequence="its answers would be noise that changes on every load",
    missing_weights_advice="Use a complete checkpoint in transformers' format "
    "(e.g. 'Qwen/Qwen2.5-VL-7B-Instruct').",
    # Retrievers are vision-language checkpoints too; name the class that loads them.
    hints={
        model_type: " (a page retriever: load it with ColPaliEncoder.from_pretrained)"
        for model_type in ("colpali", "colqwen2", "colmodernvbert")
    },
)


def _question(turn: Turn) -> str:
    stock = stock_prompt(turn.text)
    text = stock.question if stock is not None else question_of(turn.trailing_text or turn.text)
    return _one_line(text)


def _one_line(text: str) -> str:
    # Task prompts end at the first newline (PaliGemma's processor appends one as the separator).
    return " ".join(text.split())


def _chat_message(turn: Turn) -> dict[str, Any]:
    """A turn as a chat-template message: its text and images in order."""
    content: list[dict[str, Any]] = []
    for part in turn.parts:
        if isinstance(part, PageImage):
            content.append({"type": "image", "image": part.image})
        elif content and content[-1]["type"] == "text":
            content[-1]["text"] += "\n" + part
        else:
            content.append({"type": "text", "text": part})
    if not content:
        content.append({"type": "text", "text": ""})
    return {"role": turn.role, "content": content}


def _apply_chat_template(
    processor: Any, conversation: list[dict[str, Any]], images_kwargs: Mapping[str, Any]
) -> Any:
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=dict(images_kwargs),
    )


def _fold_system(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system, rest = conversation[0], [dict(message) for message in conversation[1:]]
    system_text = "\n".join(part["text"] for part in system["content"] if part["type"] == "text")
    first_user = next(message for message in rest if message["role"] == "user")
    first_user["content"] = [{"type": "text", "text": system_text}, *first_user["content"]]
    return rest
