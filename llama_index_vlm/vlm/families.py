"""Per-family prompts: a conversation becomes the text and images each model family expects.

Each supported architecture was trained on its own prompt format, and answers well only in it:

- **LLaVA 1.5** and **LLaVA-NeXT** (``model_type`` ``llava``, ``llava_next``): the processor's
  own chat template, one ``<image>`` placeholder per image, every image of every turn in one
  prompt (LLaVA-NeXT's processor then expands each placeholder by the image's any-resolution
  tiles).
- **PaliGemma** (``paligemma``): a task prompt such as ``answer en <question>`` or
  ``caption en``, no chat template; the processor adds the image tokens and ``<bos>``.
- **BLIP-2** (``blip-2``): ``Question: <question> Answer:``, earlier turns as
  ``Question: ... Answer: ...`` pairs; the processor adds the query tokens.

PaliGemma and BLIP-2 see one image per prompt. For several pages the ``multi_image_strategy``
decides: ``"per_page"`` asks the question of each page separately (the answers are combined,
each prefixed by its page's label), ``"tile"`` tiles the pages into one grid image.

PaliGemma and BLIP-2 were trained on bare questions and ignore instructions, so they get no
system prompt; their question is the text after the last image of the user's turn (text before
the pages, such as their metadata, labels them), and when it comes wrapped in one of
LlamaIndex's QA templates (which all end with ``Query: <question>`` and ``Answer:``) only
``<question>`` is asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image

from llama_index_vlm.checkpoints import Architectures
from llama_index_vlm.errors import EmptyInputError, InvalidCheckpointError
from llama_index_vlm.vlm.messages import Turn
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


@dataclass
class PromptSpec:
    """One model call: the prompt text, its images, and the page label its answer is filed under.

    ``label`` is set only when a question about several pages was split into one call per page.
    """

    text: str
    images: list[Image.Image] = field(default_factory=list)
    label: str | None = None
    add_special_tokens: bool | None = None


class Family:
    """How one architecture is loaded and prompted. Subclasses are stateless singletons."""

    name: ClassVar[str]
    model_type: ClassVar[str]
    model_class: ClassVar[str]
    #: Whether one prompt may hold several images.
    multi_image: ClassVar[bool]

    def check_processor(self, processor: Any, name_or_path: str) -> None:
        """Refuse a processor this family cannot build prompts with."""

    def prompts(
        self,
        turns: list[Turn],
        processor: Any,
        multi_image_strategy: MultiImageStrategy = "per_page",
        language: str = "en",
    ) -> list[PromptSpec]:
        """The model calls that answer the conversation's last user turn."""
        raise NotImplementedError


class _LlavaFamily(Family):
    multi_image = True

    def check_processor(self, processor: Any, name_or_path: str) -> None:
        if not getattr(processor, "chat_template", None):
            raise InvalidCheckpointError(
                f"{name_or_path!r} is a {self.name} checkpoint whose processor has no chat "
                "template, and its prompts are built with it; use a checkpoint that ships one "
                "(e.g. 'llava-hf/llava-1.5-7b-hf') or set processor.chat_template"
            )

    def prompts(self, turns, processor, multi_image_strategy="per_page", language="en"):
        import jinja2

        conversation = [_chat_turn(turn) for turn in turns]
        try:
            text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        except jinja2.TemplateError:
            if turns[0].role != "system":
                raise
            # Some templates refuse a system role: its text then opens the first user turn.
            text = processor.apply_chat_template(
                [_chat_turn(turn) for turn in _fold_system(turns)], add_generation_prompt=True
            )
        images = [page.image for turn in turns for page in turn.images]
        bos = getattr(processor.tokenizer, "bos_token", None)
        # As transformers' own apply_chat_template(tokenize=True): a template that writes <bos>
        # itself must not get a second one from the tokenizer.
        add_special_tokens = False if bos and text.startswith(bos) else None
        return [PromptSpec(text=text, images=images, add_special_tokens=add_special_tokens)]


class LlavaFamily(_LlavaFamily):
    """LLaVA 1.5 (``LlavaForConditionalGeneration``)."""

    name = "LLaVA"
    model_type = "llava"
    model_class = "LlavaForConditionalGeneration"


class LlavaNextFamily(_LlavaFamily):
    """LLaVA-NeXT / LLaVA-1.6 (``LlavaNextForConditionalGeneration``), any-resolution tiles."""

    name = "LLaVA-NeXT"
    model_type = "llava_next"
    model_class = "LlavaNextForConditionalGeneration"


class _SingleImageFamily(Family):
    multi_image = False

    def prompts(self, turns, processor, multi_image_strategy="per_page", language="en"):
        pages = [page for turn in turns for page in turn.images]
        if not pages:
            raise EmptyInputError(
                f"{self.name} answers questions about an image, and the messages hold none; "
                "add an ImageBlock (or pass image_documents=...)"
            )
        text = self.prompt_text(turns, processor, language)
        if len(pages) == 1:
            return [PromptSpec(text=text, images=[pages[0].image])]
        if multi_image_strategy == "per_page":
            return [PromptSpec(text=text, images=[page.image], label=page.label) for page in pages]
        if multi_image_strategy == "tile":
            return [PromptSpec(text=text, images=[tile_pages([page.image for page in pages])])]
        raise ValueError(
            f"multi_image_strategy must be one of {MULTI_IMAGE_STRATEGIES}, "
            f"not {multi_image_strategy!r}"
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
    for family in (LlavaFamily(), LlavaNextFamily(), PaliGemmaFamily(), Blip2Family())
}

#: The checkpoints ``HuggingFaceVLM`` loads: one model class per supported family.
VISION_LANGUAGE_MODELS = Architectures(
    classes={model_type: family.model_class for model_type, family in FAMILIES.items()},
    description="a supported vision-language model",
    examples=("llava-hf/llava-1.5-7b-hf", "google/paligemma-3b-mix-448"),
    missing_weights_consequence="its answers would be noise that changes on every load",
    missing_weights_advice="Use a complete checkpoint in transformers' format "
    "(e.g. 'llava-hf/llava-1.5-7b-hf').",
    # Retrievers are vision-language checkpoints too; name the class that loads them.
    hints={
        model_type: " (a page retriever: load it with ColPaliEncoder.from_pretrained)"
        for model_type in ("colpali", "colqwen2")
    },
)


def question_of(text: str) -> str:
    """The question inside one of LlamaIndex's QA prompts, else the text itself.

    LlamaIndex's QA, refine and citation templates all end with ``Query: <question>`` and
    ``Answer:``; single-image families, trained on bare questions, are asked only the question.

    >>> question_of("Context information is below.\\n...\\nQuery: What was revenue?\\nAnswer:")
    'What was revenue?'
    >>> question_of("What was revenue?")
    'What was revenue?'
    """
    stripped = text.strip()
    if stripped.endswith("Answer:"):
        body = stripped[: -len("Answer:")]
        start = body.rfind("Query:")
        if start >= 0 and body[start + len("Query:") :].strip():
            return body[start + len("Query:") :].strip()
    return stripped


def _question(turn: Turn) -> str:
    return _one_line(question_of(turn.trailing_text or turn.text))


def _one_line(text: str) -> str:
    # Task prompts end at the first newline (PaliGemma's processor appends one as the separator).
    return " ".join(text.split())


def _chat_turn(turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image"} for _ in turn.images]
    if turn.text or not content:
        content.append({"type": "text", "text": turn.text})
    return {"role": turn.role, "content": content}


def _fold_system(turns: list[Turn]) -> list[Turn]:
    system, rest = turns[0], [Turn(turn.role, turn.text, list(turn.images)) for turn in turns[1:]]
    first_user = next(turn for turn in rest if turn.role == "user")
    first_user.text = f"{system.text}\n\n{first_user.text}".strip()
    return rest
