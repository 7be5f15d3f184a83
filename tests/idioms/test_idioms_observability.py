"""What LlamaIndex observes: the token counts it reads, and the warning when a stock engine
built without ``multimodal=True`` sends the pages' text without their images.
"""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.query_engine import RetrieverQueryEngine

from llama_index_vlm.vlm import messages


@pytest.fixture
def counter(monkeypatch):
    """A ``TokenCountingHandler`` in LlamaIndex's global callbacks, as its docs set it."""
    handler = TokenCountingHandler()
    monkeypatch.setattr(Settings, "_callback_manager", CallbackManager([handler]))
    return handler


@pytest.fixture
def generated(llava, monkeypatch):
    """``(prompt tokens, new tokens)`` of every ``generate`` call of the tiny LLaVA."""
    counts: list[tuple[int, int]] = []
    original = llava.model.generate

    def generate(*args, **kwargs):
        output = original(*args, **kwargs)
        prompt = kwargs["input_ids"].shape[1]
        counts.append((prompt, output.shape[1] - prompt))
        return output

    monkeypatch.setattr(llava.model, "generate", generate)
    return counts


def test_token_counting_handler_counts_the_model_s_real_tokens(
    idiom_index, llava, generated, counter
):
    idiom_index.as_query_engine(llm=llava, similarity_top_k=2).query("rev?")
    (event,) = counter.llm_token_counts
    # The prompt's real tokens (its 2 pages' image tokens included), not a text estimate.
    assert (event.prompt_token_count, event.completion_token_count) == generated[0]


def test_token_counting_handler_counts_a_streamed_answer(idiom_index, llava, generated, counter):
    engine = idiom_index.as_query_engine(llm=llava, similarity_top_k=1, streaming=True)
    "".join(engine.query("rev?").response_gen)
    (event,) = counter.llm_token_counts
    assert (event.prompt_token_count, event.completion_token_count) == generated[0]


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(messages, "_warned_text_only_pages", False)


def test_a_stock_engine_without_multimodal_warns_once_naming_the_fix(
    idiom_index, llava, seen, fresh_warning, caplog
):
    calls = seen(llava)
    engine = RetrieverQueryEngine.from_args(idiom_index.as_retriever(similarity_top_k=2), llm=llava)
    with pytest.warns(UserWarning, match="multimodal=True"), caplog.at_level(logging.WARNING):
        engine.query("rev?")
    assert "multimodal=True" in caplog.text
    assert "pixel_values" not in calls[0]  # what the warning is about: no image was sent


def test_the_text_only_warning_is_given_once(idiom_index, llava, fresh_warning, recwarn):
    engine = RetrieverQueryEngine.from_args(idiom_index.as_retriever(similarity_top_k=1), llm=llava)
    engine.query("rev?")
    engine.query("costs?")
    assert sum("multimodal=True" in str(w.message) for w in recwarn.list) == 1


def test_a_multimodal_engine_does_not_warn(idiom_index, llava, fresh_warning, recwarn):
    idiom_index.as_query_engine(llm=llava, similarity_top_k=1).query("rev?")
    assert not any("multimodal=True" in str(w.message) for w in recwarn.list)
