"""``index.as_chat_engine(chat_mode=...)``: every LlamaIndex chat mode sends the retrieved page
images to the model, or raises naming one that does.
"""

from __future__ import annotations

import pytest
from llama_index.core.chat_engine import CondenseQuestionChatEngine, MultiModalContextChatEngine
from llama_index.core.llms import MockLLM

from llama_index_vlm.chat_engines import PageCondensePlusContextChatEngine
from llama_index_vlm.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("chat_mode", "engine_class"),
    [
        ("condense_question", CondenseQuestionChatEngine),
        ("context", MultiModalContextChatEngine),
        ("condense_plus_context", PageCondensePlusContextChatEngine),
        ("best", PageCondensePlusContextChatEngine),
    ],
)
def test_each_chat_mode_sends_the_page_images(
    idiom_index, llava, seen, images_in, chat_mode, engine_class
):
    calls = seen(llava)
    chat = idiom_index.as_chat_engine(chat_mode=chat_mode, llm=llava, similarity_top_k=2)
    assert isinstance(chat, engine_class)
    response = chat.chat("What was the revenue?")
    assert len(response.source_nodes) == 2
    assert images_in(calls[-1]) == 2


def test_the_default_chat_mode_condenses_with_condense_llm(idiom_index, llava, seen, images_in):
    calls = seen(llava)
    condense_llm = MockLLM(max_tokens=4)
    chat = idiom_index.as_chat_engine(llm=llava, similarity_top_k=1, condense_llm=condense_llm)
    chat.chat("What was the revenue?")
    chat.chat("And in 2024?")
    # Two answers from the VLM, each with its page; the condensing went to the text LLM.
    assert [images_in(call) for call in calls] == [1, 1]


@pytest.mark.parametrize(
    ("chat_mode", "message"),
    [("simple", "without the index"), ("react", "agent"), ("openai", "agent"), ("x", "unknown")],
)
def test_chat_modes_that_send_no_page_raise(idiom_index, llava, chat_mode, message):
    with pytest.raises(InvalidRequestError, match=message):
        idiom_index.as_chat_engine(chat_mode=chat_mode, llm=llava)


def test_an_unknown_chat_argument_raises_instead_of_being_ignored(idiom_index, llava):
    with pytest.raises(TypeError, match="sytem_prompt"):
        idiom_index.as_chat_engine(chat_mode="context", llm=llava, sytem_prompt="Be brief")


def test_llamaindex_multimodal_context_engine_over_our_retriever_sends_pages(
    idiom_index, llava, seen, images_in
):
    calls = seen(llava)
    chat = MultiModalContextChatEngine.from_defaults(
        retriever=idiom_index.as_retriever(similarity_top_k=3), multi_modal_llm=llava
    )
    chat.chat("What was the revenue?")
    assert images_in(calls[0]) == 3
