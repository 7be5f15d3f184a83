"""PaliGemma and BLIP-2 are asked the bare question, whichever of LlamaIndex's stock templates
it came in (vlm/questions.py): QA, refine, tree summarize (text, chat and multimodal forms),
citation QA and refine, and the chat engines' condense prompts."""

from __future__ import annotations

import pytest
from chats import png_bytes
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.chat_engine.condense_plus_context import DEFAULT_CONDENSE_PROMPT_TEMPLATE
from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT as CONDENSE_PROMPT
from llama_index.core.prompts import chat_prompts, default_prompts
from llama_index.core.query_engine import citation_query_engine as citation

from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.vlm.questions import question_of, stock_prompt

QUESTION = "What was the 2023 revenue?"
CONTEXT = "\x00page\x00"  # where the synthesizer puts the pages
TEMPLATES = {
    "text_qa": default_prompts.DEFAULT_TEXT_QA_PROMPT,
    "refine": default_prompts.DEFAULT_REFINE_PROMPT,
    "tree_summarize": default_prompts.DEFAULT_TREE_SUMMARIZE_PROMPT,
    "chat_text_qa": chat_prompts.CHAT_TEXT_QA_PROMPT,
    "chat_refine": chat_prompts.CHAT_REFINE_PROMPT,
    "chat_tree_summarize": chat_prompts.CHAT_TREE_SUMMARIZE_PROMPT,
    "content_qa": chat_prompts.CHAT_CONTENT_QA_PROMPT,
    "content_refine": chat_prompts.CHAT_CONTENT_REFINE_PROMPT,
    "content_tree_summarize": chat_prompts.CHAT_CONTENT_TREE_SUMMARIZE_PROMPT,
    "citation_qa": citation.CITATION_QA_TEMPLATE,
    "citation_refine": citation.CITATION_REFINE_TEMPLATE,
    "citation_content_qa": citation.CITATION_CHAT_CONTENT_QA_TEMPLATE,
    "citation_content_refine": citation.CITATION_CHAT_CONTENT_REFINE_TEMPLATE,
}


def _messages(template, query: str = QUESTION) -> list[ChatMessage]:
    """The template rendered as LlamaIndex renders it, pages still marked by :data:`CONTEXT`."""
    values = {"query_str": query, "existing_answer": "12 million"}
    if "context_messages" in getattr(template, "template_vars", ()):
        values["context_messages"] = [ChatMessage(content=CONTEXT)]
    else:
        values["context_str"] = values["context_msg"] = CONTEXT
    if hasattr(template, "format_messages"):
        return template.format_messages(**values)
    return [ChatMessage(role="user", content=template.format(**values))]


def _with_a_page(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The synthesizer's messages: the page's metadata and image where the context goes."""
    *earlier, user = messages
    before, _, after = user.content.partition(CONTEXT)
    blocks = [
        TextBlock(text=before),
        TextBlock(text="file_name: report.pdf\npage_number: 3"),
        ImageBlock(image=png_bytes()),
        TextBlock(text=after),
    ]
    return [*earlier, ChatMessage(role="user", blocks=blocks)]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_stock_template_yields_its_question(name):
    text = _messages(TEMPLATES[name])[-1].content.replace(CONTEXT, "file_name: report.pdf")
    assert stock_prompt(text).question == QUESTION


def test_the_refine_templates_existing_answer_is_not_part_of_the_question():
    text = _messages(chat_prompts.CHAT_REFINE_PROMPT, "what is the revenue")[-1].content
    assert question_of(text) == "what is the revenue"


@pytest.mark.parametrize("template", [CONDENSE_PROMPT, DEFAULT_CONDENSE_PROMPT_TEMPLATE])
def test_the_condense_templates_yield_the_follow_up_question(template):
    text = template.format(chat_history="user: Hi\nassistant: Hello", question=QUESTION)
    assert stock_prompt(text).question == QUESTION


def test_a_bare_question_is_asked_as_it_is():
    assert stock_prompt(QUESTION) is None and question_of(QUESTION) == QUESTION


def test_a_custom_template_ending_in_query_and_answer_yields_its_question():
    assert question_of(f"Look at the pages.\nQuery: {QUESTION}\nAnswer:") == QUESTION


def _paligemma_task(vlm, seen, messages) -> str:
    calls = seen(vlm)
    vlm.chat(messages)
    tokenizer = vlm.processor.tokenizer
    prefix = vlm.processor.image_token * vlm.processor.image_seq_length + tokenizer.bos_token
    return tokenizer.decode(calls[-1]["input_ids"][0]).removeprefix(prefix)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_paligemma_is_asked_the_question_of_each_stock_template(name, vlms, seen):
    messages = _with_a_page(_messages(TEMPLATES[name]))
    assert _paligemma_task(vlms("paligemma"), seen, messages) == f"answer en {QUESTION}\n"


@pytest.mark.parametrize("name", ["chat_refine", "content_refine", "citation_refine", "refine"])
def test_blip2_is_asked_the_question_of_each_refine_template(name, vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat(_with_a_page(_messages(TEMPLATES[name])))
    prompt = vlm.processor.tokenizer.decode(calls[-1]["input_ids"][0])
    assert prompt.endswith(f"Question: {QUESTION} Answer:")
    assert "12 million" not in prompt


def test_a_single_image_family_says_it_cannot_condense_a_conversation(vlms):
    prompt = CONDENSE_PROMPT.format(chat_history="user: Hi", question=QUESTION)
    with pytest.raises(EmptyInputError, match="cannot rewrite a conversation"):
        vlms("paligemma").complete(prompt)
