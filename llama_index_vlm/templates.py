"""Text prompt templates turned into page templates: ``{context_str}`` becomes the pages.

LlamaIndex's multimodal synthesizers send the retrieved pages as chat content (each page's
metadata text and its image) through *chat content* templates whose variable is
``context_messages``; a template written for text answers (``text_qa_template``,
``refine_template``, ``summary_template``) has ``{context_str}`` (or ``{context_msg}``) instead,
and a multimodal synthesizer never uses it. :class:`PageTemplate` wraps such a template so that
it is used: it is formatted as written, and where the context would go, the pages are spliced in,
text and images in order.

Example::

    qa = PromptTemplate("Pages:\\n{context_str}\\nAnswer in one word: {query_str}")
    engine = index.as_query_engine(llm=vlm, text_qa_template=qa)  # wraps it in a PageTemplate
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.generic_utils import messages_to_prompt
from llama_index.core.base.llms.types import ChatMessage, TextBlock
from llama_index.core.bridge.pydantic import SerializeAsAny
from llama_index.core.prompts.base import BasePromptTemplate

from llama_index_vlm.errors import InvalidRequestError

#: The variable of LlamaIndex's chat content templates that holds the retrieved pages.
PAGES_VARIABLE = "context_messages"

# Stands where the context goes while the wrapped template is formatted; no template writes it.
_PLACEHOLDER = "\x00llama-index-vlm pages\x00"


class PageTemplate(BasePromptTemplate):
    """A text template whose context variable receives the retrieved pages (text and images).

    Args:
        template: any LlamaIndex prompt template (``PromptTemplate``, ``ChatPromptTemplate``,
            a selector) that has the variable ``context_var``.
        context_var: the wrapped template's context variable: ``"context_str"`` for QA and
            summary templates, ``"context_msg"`` for refine templates.

    Formatting it with ``context_messages=[ChatMessage, ...]`` (what LlamaIndex's multimodal
    synthesizers pass) formats ``template`` with every other variable and puts the messages'
    blocks where ``context_var`` stands.
    """

    template: SerializeAsAny[BasePromptTemplate]
    context_var: str

    def __init__(self, template: BasePromptTemplate, context_var: str = "context_str") -> None:
        inner_name = (template.template_var_mappings or {}).get(context_var, context_var)
        if inner_name not in template.template_vars:
            raise InvalidRequestError(
                f"the template has no {{{context_var}}} variable, so the retrieved pages have "
                f"nowhere to go; its variables are {template.template_vars}. Put "
                f"{{{context_var}}} where the pages belong"
            )
        template_vars = [PAGES_VARIABLE] + [
            name for name in template.template_vars if name != inner_name
        ]
        super().__init__(
            template=template,
            context_var=context_var,
            metadata=dict(template.metadata),
            template_vars=template_vars,
            kwargs={},
            output_parser=template.output_parser,
        )

    def partial_format(self, **kwargs: Any) -> PageTemplate:
        """A copy with some variables filled in (``query_str``, ``existing_answer``...)."""
        prompt = copy.copy(self)
        prompt.kwargs = {**self.kwargs, **kwargs}
        return prompt

    def format_messages(self, llm: Any = None, **kwargs: Any) -> list[ChatMessage]:
        """The wrapped template's messages, the pages' blocks where its context stands."""
        values = {**self.kwargs, **kwargs}
        pages = values.pop(PAGES_VARIABLE, None) or []
        values[self.context_var] = _PLACEHOLDER
        messages = self.template.format_messages(llm=llm, **values)
        blocks = [block for page in _as_messages(pages) for block in page.blocks]
        return [_splice(message, blocks) for message in messages]

    def format(self, llm: Any = None, **kwargs: Any) -> str:
        """The prompt as text (images left out): what LlamaIndex measures templates by."""
        return messages_to_prompt(self.format_messages(llm=llm, **kwargs))

    def get_template(self, llm: Any = None) -> str:
        """The wrapped template's text."""
        return self.template.get_template(llm=llm)


def page_template(
    template: BasePromptTemplate | None, context_var: str = "context_str"
) -> BasePromptTemplate | None:
    """``template`` ready for a multimodal synthesizer: a chat content template (one with
    ``context_messages``) as it is, a text template wrapped in a :class:`PageTemplate`.

    >>> from llama_index.core.prompts import PromptTemplate
    >>> page_template(PromptTemplate("{context_str}\\nQ: {query_str}")).template_vars
    ['context_messages', 'query_str']
    >>> page_template(None) is None
    True
    """
    if template is None or PAGES_VARIABLE in template.template_vars:
        return template
    return PageTemplate(template, context_var)


def _as_messages(pages: Any) -> Sequence[ChatMessage]:
    # An empty context is "" when LlamaIndex measures a template without its pages.
    if isinstance(pages, str):
        return [ChatMessage(role="user", content=pages)] if pages else []
    return list(pages)


def _splice(message: ChatMessage, page_blocks: list[Any]) -> ChatMessage:
    """``message`` with the placeholder in its text replaced by ``page_blocks``."""
    blocks: list[Any] = []
    for block in message.blocks:
        text = getattr(block, "text", None)
        if block.block_type != "text" or _PLACEHOLDER not in text:
            blocks.append(block)
            continue
        pieces = text.split(_PLACEHOLDER)
        for position, piece in enumerate(pieces):
            if position:
                blocks.extend(page_blocks)
            if piece:
                blocks.append(TextBlock(text=piece))
    return ChatMessage(
        role=message.role, blocks=blocks, additional_kwargs=message.additional_kwargs
    )
