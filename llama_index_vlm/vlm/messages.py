"""LlamaIndex chat messages to a plain conversation: turns of text and decoded page images.

Everything that can be wrong with a caller's messages (nothing to answer, an image that is not
an image, a content block a vision-language model cannot read) is found here, before a model
sees anything, and reported with the message and block it is about.

LlamaIndex's multimodal synthesizers put the retrieved pages into one user message as text
blocks (the page's metadata, ``file_name: ...``/``page_number: ...``, and for citations
``Source N:``) each followed by the page's image block. The text just before an image is turned
into the image's *label*, so an answer can name the page it is about.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.llms.types import ImageBlock
from PIL import Image

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.images import decode_image, encode_image, to_rgb

# LlamaIndex roles that are not the three every chat template knows, mapped to the one they mean.
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "tool": "user",
    "function": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
}
# Blocks that carry nothing a vision-language model reads: skipped rather than refused, so a
# history that went through another LLM (thinking traces, cache hints) can still be answered.
_IGNORED_BLOCKS = {"cache", "thinking", "citation"}

_SOURCE = re.compile(r"Source (\d+):")
# A value runs to the end of its line, or to a "Source N:" that LlamaIndex's prompt helper
# glued onto the line when it merged the page's metadata block with its citation label.
_VALUE_END = r"(?=[ \t]+Source \d+:|[ \t]*$)"
_FILE_NAME = re.compile(r"^[ \t]*file_name:[ \t]*(.+?)" + _VALUE_END, re.MULTILINE)
_PAGE_NUMBER = re.compile(r"^[ \t]*page_number:[ \t]*(.+?)" + _VALUE_END, re.MULTILINE)

logger = logging.getLogger(__name__)

#: Said once per process when pages arrive as text without their images.
TEXT_ONLY_PAGES_WARNING = (
    "HuggingFaceVLM got retrieved pages as text (their file_name and page_number) but none of "
    "their images: a query engine built without multimodal=True answers from the pages' text "
    "layer only. Build it with RetrieverQueryEngine.from_args(retriever, llm=vlm, "
    "multimodal=True) (CitationQueryEngine.from_args(..., multimodal=True) for citations), or "
    "use index.as_query_engine(llm=vlm); with multimodal=True, LlamaIndex's default prompt "
    "helper may send a page's text apart from its image: pass "
    "chat_prompt_helper=vlm.chat_prompt_helper()"
)
_warned_text_only_pages = False


@dataclass
class PageImage:
    """One image of a conversation, decoded to RGB, with the label answers use to name it."""

    image: Image.Image
    label: str


@dataclass
class Turn:
    """One speaker's contiguous part of a conversation: its text and images, in their order."""

    role: str  # "system", "user" or "assistant"
    #: The turn's pieces of text (stripped, never empty) and its images, in the order given.
    parts: list[str | PageImage] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All the turn's text, one piece per line."""
        return _join(part for part in self.parts if isinstance(part, str))

    @property
    def images(self) -> list[PageImage]:
        """The turn's images, in order."""
        return [part for part in self.parts if isinstance(part, PageImage)]

    @property
    def trailing_text(self) -> str:
        """The text after the turn's last image (all its text if it has none): where a
        question follows the pages it is about, the text before them labels the pages."""
        tail: list[str] = []
        for part in reversed(self.parts):
            if isinstance(part, PageImage):
                break
            tail.insert(0, part)
        return _join(tail)

    def drop_last_image(self) -> PageImage:
        """Remove the turn's last image (and nothing else) and return it."""
        for position in range(len(self.parts) - 1, -1, -1):
            if isinstance(self.parts[position], PageImage):
                return self.parts.pop(position)
        raise ValueError(f"the {self.role} turn holds no image")

    def with_text(self, transform: Callable[[str], str]) -> Turn:
        """A copy whose every piece of text is ``transform(text)``, images unchanged."""
        return Turn(
            self.role,
            [transform(part) if isinstance(part, str) else part for part in self.parts],
        )


def to_turns(messages: Sequence[Any]) -> list[Turn]:
    """Turn LlamaIndex ``ChatMessage`` s into validated turns, images decoded.

    - System (and developer) messages are gathered into one leading system turn: chat templates
      accept a system prompt only at the start.
    - Consecutive messages of the same role are merged, their images kept in order.
    - Images keep their order across the whole conversation, so earlier turns' pages stay in
      the prompt of later turns.

    Raises:
        EmptyInputError: there are no messages, the conversation does not end with a user
            message, or that message has no text.
        UnreadableDocumentError: an image block holds no readable image.
        TypeError: a message holds audio, video, documents or tool calls.

    Example::

        turns = to_turns([ChatMessage(role="user", blocks=[ImageBlock(path="p1.png"),
                                                           TextBlock(text="What is this?")])])
        turns[0].images[0].label  # "Image 1"
    """
    messages = list(messages or [])
    if not messages:
        raise EmptyInputError("no messages; pass at least one ChatMessage holding the question")
    system_texts: list[str] = []
    turns: list[Turn] = []
    n_images = 0  # images are numbered across the whole conversation
    for position, message in enumerate(messages):
        turn = _read_message(message, position, n_images)
        n_images += len(turn.images)
        if turn.role == "system":
            if turn.text:
                system_texts.append(turn.text)
        elif turn.text or turn.images or position == len(messages) - 1:
            # An empty earlier message carries nothing; the last one is checked below.
            _append(turns, turn)
    _check_ends_with_a_question(turns)
    if system_texts:
        turns.insert(0, Turn(role="system", parts=["\n\n".join(system_texts)]))
    warn_if_pages_without_images(turns)
    return turns


def warn_if_pages_without_images(turns: list[Turn]) -> None:
    """Warn once (``logging`` and ``warnings``) when a conversation holds retrieved pages'
    metadata text (``file_name: ...`` and ``page_number: ...``, as LlamaIndex writes a node)
    and no image at all: a text synthesizer sent the pages' text layer without their images.
    """
    global _warned_text_only_pages
    if _warned_text_only_pages or any(turn.images for turn in turns):
        return
    text = "\n".join(turn.text for turn in turns)
    if _FILE_NAME.search(text) and _PAGE_NUMBER.search(text):
        _warned_text_only_pages = True
        logger.warning(TEXT_ONLY_PAGES_WARNING)
        warnings.warn(TEXT_ONLY_PAGES_WARNING, UserWarning, stacklevel=4)


def _read_message(message: Any, position: int, n_images_before: int) -> Turn:
    """One message as a turn: its text and images in order, each image labelled by the text
    before it."""
    role = _ROLES.get(str(getattr(message.role, "value", message.role)), "user")
    parts: list[str | PageImage] = []
    since_image: list[str] = []
    for block, title in _flatten(getattr(message, "blocks", []), position):
        if isinstance(block, str):
            if block.strip():
                parts.append(block.strip())
                since_image.append(block)
            continue
        n_images = sum(isinstance(part, PageImage) for part in parts)
        where = f"message {position}, image {n_images + 1}"
        number = n_images_before + n_images + 1
        label = title or label_from_prompt_text("\n".join(since_image), number)
        parts.append(PageImage(image=image_from_block(block, where), label=label))
        since_image = []
    return Turn(role=role, parts=parts)


def _append(turns: list[Turn], turn: Turn) -> None:
    """Append ``turn``, merged into the last turn when the same role speaks again."""
    if turns and turns[-1].role == turn.role:
        turns[-1].parts.extend(turn.parts)
    else:
        turns.append(turn)


def _check_ends_with_a_question(turns: list[Turn]) -> None:
    if not turns or turns[-1].role != "user":
        raise EmptyInputError(
            "the conversation does not end with a user message; the last message must be the "
            "user's question"
        )
    if not turns[-1].text:
        raise EmptyInputError(
            "the last user message has no text; ask a question about the image(s) "
            "(e.g. 'What is the total revenue?', or 'caption en' for a PaliGemma caption)"
        )


def _join(texts: Iterable[str]) -> str:
    return "\n".join(part.strip() for part in texts if part.strip())


def _flatten(
    blocks: Iterable[Any], position: int, title: str | None = None
) -> Iterable[tuple[Any, str | None]]:
    """Yield ``(text or image block, citable title)`` in order, through citable blocks."""
    for block in blocks:
        kind = getattr(block, "block_type", None)
        if kind == "text":
            yield block.text, title
        elif kind == "image":
            yield block, title
        elif kind == "citable":
            # A citable block names its content; that title beats any guess from the text.
            yield from _flatten(block.content, position, block.title)
        elif kind in _IGNORED_BLOCKS:
            continue
        else:
            raise TypeError(
                f"message {position} holds a {kind or type(block).__name__!r} block; a "
                "vision-language model reads only text and image blocks"
            )


def image_from_block(block: Any, where: str) -> Image.Image:
    """Decode a LlamaIndex ``ImageBlock`` (bytes, base64, path, data URL or URL) to RGB.

    Raises:
        UnreadableDocumentError: the block is empty, its file or URL cannot be read, or its
            bytes are not an image Pillow can open.

    Example::

        image_from_block(ImageBlock(path="page_3.png"), "message 0, image 1").size
    """
    source = _describe_source(block, where)
    try:
        data = block.resolve_image().read()
    except Exception as error:  # resolve_image raises ValueError, OSError or HTTP errors
        reason = f"the image block holds no image ({error})"
        raise UnreadableDocumentError(source, reason) from error
    try:
        return decode_image(data)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableDocumentError(
            source, f"its {len(data)} bytes are not an image Pillow can open ({error})"
        ) from error


def _describe_source(block: Any, where: str) -> str:
    if getattr(block, "path", None):
        return f"{where} ({block.path})"
    url = str(getattr(block, "url", None) or "")
    if url and not url.startswith("data:"):
        return f"{where} ({url})"
    return where


def label_from_prompt_text(text_before: str, number: int) -> str:
    """Name the ``number``-th image of a conversation from the text just before it, as
    LlamaIndex's synthesizers write it (a page's metadata, a citation's ``Source N:``).

    >>> label_from_prompt_text("file_name: report.pdf\\npage_number: 3", 1)
    'report.pdf, page 3'
    >>> label_from_prompt_text("file_name: report.pdf\\npage_number: 3\\nSource 2:", 2)
    'Source 2 (report.pdf, page 3)'
    >>> label_from_prompt_text("", 4)
    'Image 4'
    """
    source = _last(_SOURCE, text_before)
    file_name = _last(_FILE_NAME, text_before)
    page_number = _last(_PAGE_NUMBER, text_before)
    if file_name and page_number:
        document = f"{file_name}, page {page_number}"
    else:
        document = file_name or (f"page {page_number}" if page_number else "")
    if source:
        return f"Source {source} ({document})" if document else f"Source {source}"
    return document or f"Image {number}"


def _last(pattern: re.Pattern[str], text: str) -> str:
    matches = pattern.findall(text)
    return matches[-1].strip() if matches else ""


def images_to_blocks(images: Iterable[Any]) -> list[Any]:
    """Legacy ``image_documents`` (ImageNode, ImageDocument, NodeWithScore, PIL, ImageBlock)
    to ``ImageBlock`` s, so ``complete(prompt, image_documents=nodes)`` works as it did for
    LlamaIndex's old multimodal LLMs.

    >>> [block.block_type for block in images_to_blocks([Image.new("RGB", (4, 4))])]
    ['image']
    """
    blocks = []
    for item in images:
        item = getattr(item, "node", item)  # NodeWithScore -> its node
        if getattr(item, "block_type", None) == "image":
            blocks.append(item)
        elif isinstance(item, Image.Image):
            blocks.append(ImageBlock(image=encode_image(to_rgb(item), "PNG")))
        elif hasattr(item, "resolve_image"):  # ImageNode, ImageDocument
            blocks.append(
                ImageBlock(image=item.resolve_image().read(), image_mimetype=item.image_mimetype)
            )
        else:
            raise TypeError(
                f"cannot use a {type(item).__name__} as an image; pass ImageNode, ImageDocument, "
                "ImageBlock or PIL images"
            )
    return blocks
