"""Text prompt templates given the pages (llama_index_vlm.templates)."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate

from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.templates import PAGES_VARIABLE, PageTemplate, page_template

PAGE = ChatMessage(role="user", blocks=[TextBlock(text="page_number: 1"), ImageBlock(image=b"x")])


def test_the_pages_go_where_the_context_variable_stands():
    template = PageTemplate(PromptTemplate("Before\n{context_str}\nAfter: {query_str}"))
    (message,) = template.format_messages(context_messages=[PAGE], query_str="why?")
    kinds = [block.block_type for block in message.blocks]
    assert kinds == ["text", "text", "image", "text"]
    assert message.blocks[0].text == "Before\n" and message.blocks[-1].text == "\nAfter: why?"


def test_chat_templates_keep_their_roles():
    template = PageTemplate(
        ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{context_str} {q}")])
    )
    messages = template.format_messages(context_messages=[PAGE], q="?")
    assert [m.role.value for m in messages] == ["system", "user"]
    assert sum(b.block_type == "image" for b in messages[1].blocks) == 1


def test_partial_format_keeps_the_filled_variables():
    template = PageTemplate(
        PromptTemplate("{context_msg} {query_str} {existing_answer}"), "context_msg"
    )
    partial = template.partial_format(query_str="q", existing_answer="12")
    (message,) = partial.format_messages(context_messages=[PAGE])
    assert message.blocks[-1].text == " q 12"


def test_without_pages_it_formats_as_text():
    template = PageTemplate(PromptTemplate("[{context_str}] {query_str}"))
    text = template.format(context_messages="", query_str="q")
    assert text.startswith("user: [") and "] q" in text and "\x00" not in text


def test_a_template_without_the_context_variable_is_refused():
    with pytest.raises(InvalidRequestError, match="context_str"):
        PageTemplate(PromptTemplate("Only {query_str}"))


def test_a_chat_content_template_is_used_as_it_is():
    from llama_index.core.prompts.chat_prompts import CHAT_CONTENT_QA_PROMPT

    assert page_template(CHAT_CONTENT_QA_PROMPT) is CHAT_CONTENT_QA_PROMPT
    assert PAGES_VARIABLE in CHAT_CONTENT_QA_PROMPT.template_vars
