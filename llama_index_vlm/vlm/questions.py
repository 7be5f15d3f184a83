"""The question inside LlamaIndex's prompts, for models trained on bare questions.

PaliGemma and BLIP-2 answer a question about an image and nothing else: a QA template's
instructions, a refine template's existing answer or a citation template's worked example only
confuse them. So their prompt is the question alone, read out of whichever of LlamaIndex's stock
templates the text was made from: each template is rendered once by LlamaIndex itself with
marker values, and the rendering becomes a pattern whose only capture is the question. The
patterns follow LlamaIndex's wording wherever it changes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

# Marker values a template is rendered with: the question, and any other variable.
_QUESTION = "\x00QUESTION\x00"
_OTHER = "\x00OTHER\x00"
_MARKERS = re.compile("(\x00QUESTION\x00|\x00OTHER\x00)")
_QUESTION_VARIABLES = ("query_str", "question")


@dataclass(frozen=True)
class StockPrompt:
    """A text recognised as one of LlamaIndex's stock templates, and the question it asks."""

    #: The template's name (``"text_qa"``, ``"refine"``, ``"citation_qa"``, ``"condense"``...).
    template: str
    question: str


def stock_prompt(text: str) -> StockPrompt | None:
    """The stock template ``text`` was made from and its question, or None for any other text.

    Pages' images are not part of ``text``; whitespace may differ from the template's.

    >>> from llama_index.core.prompts.chat_prompts import CHAT_REFINE_PROMPT
    >>> refine = CHAT_REFINE_PROMPT.format_messages(
    ...     context_msg="(page)", query_str="What was revenue?", existing_answer="12")
    >>> stock_prompt(refine[-1].content)
    StockPrompt(template='refine', question='What was revenue?')
    >>> stock_prompt("What was revenue?") is None
    True
    """
    stripped = text.strip()
    for name, pattern in _patterns():
        match = pattern.fullmatch(stripped)
        if match and match["question"].strip():
            return StockPrompt(template=name, question=match["question"].strip())
    return None


def question_of(text: str) -> str:
    """The question inside a LlamaIndex prompt, else the text itself.

    Recognises every stock template of LlamaIndex's response synthesizers (QA, refine, tree
    summarize, in their text, chat and multimodal forms), of its citation query engine and of
    its condensing chat engines; for other templates that end with ``Query: <question>`` and
    ``Answer:`` (the convention of LlamaIndex's QA templates), the question between them.

    >>> question_of("Context information is below.\\n...\\nQuery: What was revenue?\\nAnswer:")
    'What was revenue?'
    >>> question_of("What was revenue?")
    'What was revenue?'
    """
    stock = stock_prompt(text)
    if stock is not None:
        return stock.question
    stripped = text.strip()
    if stripped.endswith("Answer:"):
        body = stripped[: -len("Answer:")]
        start = body.rfind("Query:")
        if start >= 0 and body[start + len("Query:") :].strip():
            return body[start + len("Query:") :].strip()
    return stripped


@functools.cache
def _patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One pattern per stock template, most specific (longest) first."""
    rendered = [(name, _render(template)) for name, template in _stock_templates()]
    rendered.sort(key=lambda item: -len(item[1]))
    return tuple((name, _to_pattern(text)) for name, text in rendered if _QUESTION in text)


def _stock_templates() -> list[tuple[str, Any]]:
    from llama_index.core.chat_engine import condense_plus_context, condense_question
    from llama_index.core.prompts import chat_prompts, default_prompts
    from llama_index.core.query_engine import citation_query_engine as citation

    return [
        ("text_qa", default_prompts.DEFAULT_TEXT_QA_PROMPT),
        ("refine", default_prompts.DEFAULT_REFINE_PROMPT),
        ("tree_summarize", default_prompts.DEFAULT_TREE_SUMMARIZE_PROMPT),
        ("text_qa", chat_prompts.CHAT_TEXT_QA_PROMPT),
        ("refine", chat_prompts.CHAT_REFINE_PROMPT),
        ("tree_summarize", chat_prompts.CHAT_TREE_SUMMARIZE_PROMPT),
        ("text_qa", chat_prompts.CHAT_CONTENT_QA_PROMPT),
        ("refine", chat_prompts.CHAT_CONTENT_REFINE_PROMPT),
        ("tree_summarize", chat_prompts.CHAT_CONTENT_TREE_SUMMARIZE_PROMPT),
        ("citation_qa", citation.CITATION_QA_TEMPLATE),
        ("citation_refine", citation.CITATION_REFINE_TEMPLATE),
        ("citation_qa", citation.CITATION_CHAT_CONTENT_QA_TEMPLATE),
        ("citation_refine", citation.CITATION_CHAT_CONTENT_REFINE_TEMPLATE),
        ("condense", condense_question.DEFAULT_PROMPT),
        ("condense", condense_plus_context.DEFAULT_CONDENSE_PROMPT_TEMPLATE),
    ]


def _render(template: Any) -> str:
    """The template's user text, rendered by LlamaIndex with marker values."""
    from llama_index.core.base.llms.types import ChatMessage

    if isinstance(template, str):
        names = re.findall(r"{(\w+)}", template)
        return template.format(**{name: _marker(name) for name in names})
    values: dict[str, Any] = {name: _marker(name) for name in template.template_vars}
    if "context_messages" in values:
        values["context_messages"] = [ChatMessage(content=_OTHER)]
    messages = template.format_messages(**values)
    users = [message for message in messages if str(message.role.value) == "user"]
    return "\n".join(block.text for block in users[-1].blocks if block.block_type == "text")


def _marker(name: str) -> str:
    return _QUESTION if name in _QUESTION_VARIABLES else _OTHER


def _to_pattern(rendered: str) -> re.Pattern[str]:
    pieces = []
    for piece in _MARKERS.split(rendered.strip()):
        if piece == _QUESTION:
            pieces.append(r"(?P<question>.+?)")
        elif piece == _OTHER:
            pieces.append(r".*?")
        else:
            # Whitespace may differ: LlamaIndex strips and joins text blocks around page images.
            words = piece.split()
            pieces.append(r"\s*" + r"\s+".join(re.escape(word) for word in words) + r"\s*")
    return re.compile("".join(pieces), re.DOTALL)
