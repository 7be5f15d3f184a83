"""HuggingFaceVLM as a LlamaIndex LLM, on tiny checkpoints of every family: loading, chat,
completion, streaming, async, generation settings and LlamaIndex integration."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from chats import INTERFACE_KINDS, KINDS, MULTI_IMAGE_KINDS, question, variant
from llama_index.core import Settings
from llama_index.core.base.llms.types import MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from PIL import Image

from llama_index_vlm.vlm import HuggingFaceVLM

FAMILY_NAMES = {
    "llava": "LLaVA",
    "llava_next": "LLaVA-NeXT",
    "llava_onevision": "LLaVA-OneVision",
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "qwen3_vl": "Qwen3-VL",
    "smolvlm": "SmolVLM",
    "idefics3": "Idefics3",
    "gemma3": "Gemma 3",
    "paligemma": "PaliGemma",
    "blip2": "BLIP-2",
}
MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "blip2": "Blip2ForConditionalGeneration",
}
PAGE = Image.new("RGB", (40, 40), "red")

# -- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_family_loads_with_its_real_class(kind, vlms):
    vlm = vlms(kind)
    assert vlm.family == FAMILY_NAMES[kind]
    assert type(vlm.model).__name__ == MODEL_CLASSES[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_describes_a_chat_model_of_the_configs_context_window(kind, vlms):
    vlm = vlms(kind)
    metadata = vlm.metadata
    assert metadata.is_chat_model and not metadata.is_function_calling_model
    text_config = vlm.model.config.get_text_config()
    assert metadata.context_window == text_config.max_position_embeddings
    assert metadata.num_output == vlm.max_new_tokens == 6
    assert metadata.model_name == vlm.name_or_path


def test_from_pretrained_sorts_fields_from_generate_kwargs(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(
        tiny_checkpoint("blip2"),
        max_new_tokens=3,
        multi_image_strategy="tile",
        repetition_penalty=1.2,
        dtype="float32",
    )
    assert vlm.max_new_tokens == 3 and vlm.multi_image_strategy == "tile"
    assert vlm.generate_kwargs == {"repetition_penalty": 1.2}
    assert vlm.trust_remote_code is False


def test_an_unknown_multi_image_strategy_is_refused(vlms):
    with pytest.raises(ValueError, match="multi_image_strategy"):
        variant(vlms("llava"), multi_image_strategy="collage")


# -- chat and completion ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_answers_a_question_about_one_image_in_one_call(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    one = vlm.chat(question(1))
    assert one.message.role == MessageRole.ASSISTANT
    assert isinstance(one.message.content, str)
    assert one.additional_kwargs["images"] == 1 and len(calls) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_stream_chat_joins_to_the_chat_answer(kind, vlms):
    vlm = variant(vlms(kind), max_new_tokens=12)
    messages = question(2)
    answer = vlm.chat(messages).message.content
    chunks = list(vlm.stream_chat(messages))
    assert "".join(chunk.delta for chunk in chunks) == answer
    assert chunks[-1].message.content == answer


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)  # LLaVA also answers text-only prompts
def test_greedy_stream_complete_joins_to_the_completion(kind, vlms):
    vlm = variant(vlms(kind), max_new_tokens=12)
    streamed = "".join(piece.delta for piece in vlm.stream_complete("What?"))
    assert streamed == vlm.complete("What?").text


# -- async -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INTERFACE_KINDS)
def test_achat_gives_the_chat_answer(kind, vlms):
    vlm = vlms(kind)
    answer = vlm.chat(question(2)).message.content
    assert asyncio.run(vlm.achat(question(2))).message.content == answer


@pytest.mark.parametrize("kind", INTERFACE_KINDS)
def test_astream_chat_joins_to_the_chat_answer(kind, vlms):
    vlm = vlms(kind)
    answer = vlm.chat(question(2)).message.content

    async def run():
        return [chunk async for chunk in await vlm.astream_chat(question(2))]

    assert "".join(chunk.delta for chunk in asyncio.run(run())) == answer


@pytest.mark.parametrize("kind", INTERFACE_KINDS)
def test_acomplete_gives_the_completion(kind, vlms):
    vlm = vlms(kind)
    completion = vlm.complete("What is it?", image_documents=[PAGE]).text
    assert asyncio.run(vlm.acomplete("What is it?", image_documents=[PAGE])).text == completion


@pytest.mark.parametrize("kind", INTERFACE_KINDS)
def test_astream_complete_joins_to_the_completion(kind, vlms):
    vlm = vlms(kind)
    completion = vlm.complete("What is it?", image_documents=[PAGE]).text

    async def run():
        stream = await vlm.astream_complete("What is it?", image_documents=[PAGE])
        return [piece async for piece in stream]

    assert "".join(piece.delta for piece in asyncio.run(run())) == completion


@pytest.mark.parametrize("kind", INTERFACE_KINDS)
def test_async_calls_leave_the_event_loop_free(kind, vlms, monkeypatch):
    vlm = vlms(kind)
    original = vlm.model.generate

    def slow_generate(*args, **kwargs):
        time.sleep(0.2)  # long enough for a blocked event loop to be noticed
        return original(*args, **kwargs)

    monkeypatch.setattr(vlm.model, "generate", slow_generate)

    async def run():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        await vlm.achat(question(2))
        [chunk async for chunk in await vlm.astream_chat(question(2))]
        done.set()
        await ticking
        return ticks

    assert asyncio.run(run()) >= 10  # the loop kept running through at least 0.4 s of generation


# -- generation settings ---------------------------------------------------------------------


def test_call_kwargs_override_generation_settings(vlms, seen):
    vlm = vlms("llava")
    calls = seen(vlm)
    response = vlm.chat(question(1), max_new_tokens=2, min_new_tokens=2)
    assert calls[0]["max_new_tokens"] == 2 and response.additional_kwargs["completion_tokens"] == 2


def test_sampling_passes_temperature_and_top_p(vlms, seen):
    sampled = variant(vlms("llava"), do_sample=True, temperature=0.7, top_p=0.9)
    calls = seen(sampled)
    sampled.chat(question(1))
    assert calls[0]["do_sample"] and calls[0]["temperature"] == 0.7 and calls[0]["top_p"] == 0.9


def test_greedy_decoding_gets_no_sampling_settings(vlms, seen):
    vlm = vlms("llava")
    calls = seen(vlm)
    vlm.chat(question(1))
    assert "temperature" not in calls[0]


def test_temperature_0_means_greedy_decoding(vlms, seen):
    zero = variant(vlms("llava"), do_sample=True, temperature=0.0)
    calls = seen(zero)
    zero.chat(question(1))
    assert not calls[0]["do_sample"] and "temperature" not in calls[0]


# -- LlamaIndex integration ------------------------------------------------------------------


@pytest.fixture(scope="module")
def configured(vlms):
    return variant(
        vlms("llava_next"),
        max_new_tokens=5,
        drop_pages_to_fit=True,
        system_prompt="Answer briefly.",
        generate_kwargs={"repetition_penalty": 1.1},
    )


def test_to_dict_is_json_named_by_class_without_live_handles(configured):
    config = configured.to_dict()
    assert config["class_name"] == HuggingFaceVLM.class_name() == "HuggingFaceVLM"
    assert json.loads(json.dumps(config)) == config
    assert "model" not in config and "processor" not in config


def test_from_dict_restores_the_config(configured):
    config = configured.to_dict()
    assert HuggingFaceVLM.from_dict(config).to_dict() == config


def test_a_restored_vlm_gives_the_same_answer(configured):
    restored = HuggingFaceVLM.from_dict(configured.to_dict())
    assert restored.chat(question(1)).message.content == (
        configured.chat(question(1)).message.content
    )


def test_settings_llm_accepts_it(vlms):
    vlm = vlms("llava")
    previous = Settings._llm
    try:
        Settings.llm = vlm
        assert Settings.llm is vlm
    finally:
        Settings._llm = previous


def _chat_events(vlm) -> list:
    """The LLM chat start and end events of one chat and one stream_chat."""
    events = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, (LLMChatStartEvent, LLMChatEndEvent)):
                events.append(event)

    handler = Collect()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        vlm.chat(question(2))
        list(vlm.stream_chat(question(1)))
    finally:
        dispatcher.event_handlers.remove(handler)
    return events


def test_instrumentation_events_fire_for_chat_and_stream(vlms):
    kinds = [type(event).__name__ for event in _chat_events(variant(vlms("llava")))]
    assert kinds.count("LLMChatStartEvent") == 2 and kinds.count("LLMChatEndEvent") >= 2


def test_the_chat_end_event_reports_the_image_tokens(vlms):
    events = _chat_events(variant(vlms("llava")))
    assert events[1].response.additional_kwargs["image_tokens"] == 32


def test_callbacks_fire_for_chat_and_stream(vlms):
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    vlm = variant(vlms("llava"))
    debug = LlamaDebugHandler()
    vlm.callback_manager = CallbackManager([debug])
    vlm.chat(question(2))
    list(vlm.stream_chat(question(1)))
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 2


def test_concurrent_calls_share_one_model_safely(vlms):
    vlm = vlms("llava")
    answer = vlm.chat(question(1)).message.content
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(vlm.chat(question(1)).message.content))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [answer] * 3
