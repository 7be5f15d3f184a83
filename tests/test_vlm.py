"""HuggingFaceVLM on tiny checkpoints of every family: prompts, image tokens, streaming, async,
context limits, bad input and LlamaIndex integration."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import threading
import time

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.schema import ImageNode, NodeWithScore
from PIL import Image
from safetensors.torch import load_file, save_file

from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidCheckpointError,
    MissingWeightsError,
    UnreadableDocumentError,
)
from llama_index_vlm.vlm import HuggingFaceVLM
from llama_index_vlm.vlm.tiling import tile_pages

KINDS = ["llava", "llava_next", "paligemma", "blip2"]
FAMILY_NAMES = {
    "llava": "LLaVA",
    "llava_next": "LLaVA-NeXT",
    "paligemma": "PaliGemma",
    "blip2": "BLIP-2",
}
MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "blip2": "Blip2ForConditionalGeneration",
}
MULTI_IMAGE = {"llava", "llava_next"}
# Differently sized pages: LLaVA-NeXT gives each its own number of any-resolution tiles.
PAGE_SIZES = [(60, 100), (120, 40), (64, 64), (90, 180)]
COLOURS = ["red", "green", "blue", "orange"]


def png_bytes(colour: str = "red", size: tuple[int, int] = (60, 100)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def page_blocks(n_pages: int) -> list:
    """What LlamaIndex's multimodal synthesizer sends: each page's metadata, then its image."""
    blocks = []
    for index in range(n_pages):
        blocks.append(TextBlock(text=f"file_name: report.pdf\npage_number: {index + 1}"))
        blocks.append(ImageBlock(image=png_bytes(COLOURS[index], PAGE_SIZES[index])))
    return blocks


def question(n_pages: int, text: str = "What is the total revenue?") -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[*page_blocks(n_pages), TextBlock(text=text)])]


@pytest.fixture(scope="module")
def vlms(tiny_checkpoint):
    loaded: dict[str, HuggingFaceVLM] = {}

    def get(kind: str) -> HuggingFaceVLM:
        if kind not in loaded:
            loaded[kind] = HuggingFaceVLM.from_pretrained(tiny_checkpoint(kind), max_new_tokens=6)
        return loaded[kind]

    return get


def variant(vlm: HuggingFaceVLM, **settings) -> HuggingFaceVLM:
    """The same loaded model with other settings (no second load)."""
    config = {**vlm.to_dict(), **settings}
    config.pop("class_name")
    return HuggingFaceVLM(model=vlm.model, processor=vlm.processor, **config)


def image_tokens(vlm: HuggingFaceVLM, call: dict) -> int:
    return int((call["input_ids"] == vlm.model.config.image_token_id).sum())


def prompt_text(vlm: HuggingFaceVLM, call: dict) -> str:
    return vlm.processor.tokenizer.decode(call["input_ids"][0])


def expected_image_tokens(vlm: HuggingFaceVLM, kind: str, size: tuple[int, int]) -> int:
    """Image tokens of one page, from the config or processor, as transformers computes them."""
    config = vlm.model.config
    if kind == "llava":
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        # The "default" strategy drops the CLS token, "full" keeps it.
        return patches + (config.vision_feature_select_strategy == "full")
    if kind == "llava_next":
        width, height = size
        counts = vlm.processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
        return counts.num_image_tokens[0]
    if kind == "paligemma":
        return (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return config.num_query_tokens  # BLIP-2: the Q-Former's query tokens


# -- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_family_loads_with_its_real_class_and_metadata(kind, vlms):
    vlm = vlms(kind)
    assert vlm.family == FAMILY_NAMES[kind]
    assert type(vlm.model).__name__ == MODEL_CLASSES[kind]
    metadata = vlm.metadata
    assert metadata.is_chat_model and not metadata.is_function_calling_model
    text_config = vlm.model.config.get_text_config()
    assert metadata.context_window == text_config.max_position_embeddings
    assert metadata.num_output == vlm.max_new_tokens == 6
    assert metadata.model_name == vlm.name_or_path


def test_family_comes_from_config_not_name(tiny_checkpoint, tmp_path):
    misleading = tmp_path / "paligemma-3b-mix-448"  # a LLaVA checkpoint under a PaliGemma name
    shutil.copytree(tiny_checkpoint("llava"), misleading)
    assert HuggingFaceVLM.from_pretrained(misleading).family == "LLaVA"


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


def test_retriever_checkpoint_is_refused(tiny_checkpoint):
    with pytest.raises(InvalidCheckpointError, match="'colpali' checkpoint.*ColPaliEncoder"):
        HuggingFaceVLM.from_pretrained(tiny_checkpoint("colpali"))


def test_text_only_checkpoint_is_refused(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(InvalidCheckpointError, match="'llama' checkpoint, not a supported"):
        HuggingFaceVLM.from_pretrained(tmp_path)


def test_missing_path_and_offline_hub_id_are_refused(tmp_path):
    with pytest.raises(InvalidCheckpointError, match="holds no config.json"):
        HuggingFaceVLM.from_pretrained(tmp_path)
    with pytest.raises(InvalidCheckpointError, match="pass a local directory"):
        HuggingFaceVLM.from_pretrained("llava-hf/llava-1.5-7b-hf")


def test_missing_weights_are_refused(tiny_checkpoint, tmp_path):
    broken = tmp_path / "llava"
    shutil.copytree(tiny_checkpoint("llava"), broken)
    weights = load_file(broken / "model.safetensors")
    kept = {name: t for name, t in weights.items() if not name.endswith("lm_head.weight")}
    assert len(kept) == len(weights) - 1
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match="lm_head.weight") as caught:
        HuggingFaceVLM.from_pretrained(broken)
    assert [name.split(".")[-2] for name in caught.value.missing] == ["lm_head"]


# -- answering -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_answers_one_image_and_several_pages(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    one = vlm.chat(question(1))
    assert one.message.role == MessageRole.ASSISTANT
    assert isinstance(one.message.content, str)
    assert one.additional_kwargs["images"] == 1 and len(calls) == 1

    calls.clear()
    several = vlm.chat(question(3))
    assert several.additional_kwargs["images"] == 3
    if kind in MULTI_IMAGE:
        assert len(calls) == 1  # every page in one prompt
        assert several.additional_kwargs["model_calls"] == 1
    else:
        assert len(calls) == 3  # per_page: one prompt per page, answers filed under its label
        lines = several.message.content.split("\n")
        assert [line.split(":")[0] for line in lines] == [
            f"report.pdf, page {number}" for number in (1, 2, 3)
        ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_pages", [1, 3])
def test_prompt_carries_the_right_number_of_image_tokens(kind, n_pages, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    response = vlm.chat(question(n_pages))
    per_page = [expected_image_tokens(vlm, kind, size) for size in PAGE_SIZES[:n_pages]]
    if kind in MULTI_IMAGE:
        assert [image_tokens(vlm, call) for call in calls] == [sum(per_page)]
    else:
        assert [image_tokens(vlm, call) for call in calls] == per_page
    assert response.additional_kwargs["image_tokens"] == sum(per_page)
    if kind == "llava_next" and n_pages > 1:
        assert len(set(per_page)) > 1  # any-resolution: the count follows the page's size


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_stream_equals_greedy_answer(kind, vlms):
    vlm = variant(vlms(kind), max_new_tokens=12)
    messages = question(2)
    answer = vlm.chat(messages).message.content
    chunks = list(vlm.stream_chat(messages))
    assert "".join(chunk.delta for chunk in chunks) == answer
    if chunks:
        assert chunks[-1].message.content == answer
    if kind in MULTI_IMAGE:  # LLaVA also answers text-only prompts
        streamed = "".join(piece.delta for piece in vlm.stream_complete("What?"))
        assert streamed == vlm.complete("What?").text


@pytest.mark.parametrize("kind", KINDS)
def test_async_variants_match_sync_and_leave_the_event_loop_free(kind, vlms, monkeypatch):
    vlm = vlms(kind)
    messages = question(2)
    answer = vlm.chat(messages).message.content
    page = Image.new("RGB", (40, 40), "red")
    completion = vlm.complete("What is it?", image_documents=[page]).text

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
        chat = await vlm.achat(messages)
        stream = [chunk async for chunk in await vlm.astream_chat(messages)]
        done.set()
        await ticking
        complete = await vlm.acomplete("What is it?", image_documents=[page])
        pieces = [
            piece
            async for piece in await vlm.astream_complete("What is it?", image_documents=[page])
        ]
        return chat, stream, complete, pieces, ticks

    chat, stream, complete, pieces, ticks = asyncio.run(run())
    assert chat.message.content == answer
    assert "".join(chunk.delta for chunk in stream) == answer
    assert complete.text == completion
    assert "".join(piece.delta for piece in pieces) == completion
    assert ticks >= 10  # the loop kept running through at least 0.4 s of generation


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_second_turn_still_shows_the_first_turns_image(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    first = [
        ChatMessage(
            role="user",
            blocks=[ImageBlock(image=png_bytes("red", (60, 100))), TextBlock(text="What is it?")],
        )
    ]
    vlm.chat(first)
    second = [
        *first,
        ChatMessage(role="assistant", content="A red page."),
        ChatMessage(role="user", content="And its title?"),
    ]
    vlm.chat(second)
    first_tokens, second_tokens = (image_tokens(vlm, call) for call in calls)
    assert second_tokens == first_tokens == expected_image_tokens(vlm, kind, (60, 100))
    assert calls[1]["pixel_values"].shape[0] == 1
    text = prompt_text(vlm, calls[1])
    assert "A red page." in text and text.index("What is it?") < text.index("And its title?")


def test_blip2_second_turn_keeps_the_image_and_the_exchange(vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat(
        [
            ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text="Q1?")]),
            ChatMessage(role="assistant", content="A1."),
            ChatMessage(role="user", content="Q2?"),
        ]
    )
    assert image_tokens(vlm, calls[0]) == vlm.model.config.num_query_tokens
    assert prompt_text(vlm, calls[0]).endswith("Question: Q1? Answer: A1. Question: Q2? Answer:")


# -- prompt formats --------------------------------------------------------------------------


def test_llava_uses_the_chat_template_with_the_system_prompt(vlms, seen):
    vlm = vlms("llava")
    calls = seen(vlm)
    vlm.chat([ChatMessage(role="system", content="Answer briefly."), *question(2)])
    text = prompt_text(vlm, calls[0])
    template = vlm.processor.apply_chat_template(
        [
            {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "image"},
                    {
                        "type": "text",
                        "text": "file_name: report.pdf\npage_number: 1\n"
                        "file_name: report.pdf\npage_number: 2\nWhat is the total revenue?",
                    },
                ],
            },
        ],
        add_generation_prompt=True,
    )
    image_token = vlm.processor.image_token
    per_page = expected_image_tokens(vlm, "llava", PAGE_SIZES[0])
    expanded = template.replace(f"{image_token}\n", f"{image_token * per_page}\n")
    assert text.removeprefix(vlm.processor.tokenizer.bos_token) == expanded


def test_paligemma_gets_task_prompts_without_system_text(vlms, seen):
    vlm = vlms("paligemma")
    calls = seen(vlm)
    image = [ImageBlock(image=png_bytes())]
    system = ChatMessage(role="system", content="You are an expert Q&A system.")
    for text in ["What is the total revenue?", "caption en"]:
        vlm.chat([system, ChatMessage(role="user", blocks=[*image, TextBlock(text=text)])])
    # LlamaIndex's QA template: only its question is asked.
    wrapped = (
        "Context information is below.\n---\nGiven the context...\nQuery: How many units?\nAnswer:"
    )
    vlm.chat([ChatMessage(role="user", blocks=[*image, TextBlock(text=wrapped)])])
    variant(vlm, task_language="fr").chat(question(1))
    tokenizer = vlm.processor.tokenizer
    image_prefix = vlm.processor.image_token * vlm.processor.image_seq_length + tokenizer.bos_token
    assert [prompt_text(vlm, call) for call in calls] == [
        f"{image_prefix}answer en What is the total revenue?\n",
        f"{image_prefix}caption en\n",
        f"{image_prefix}answer en How many units?\n",
        f"{image_prefix}answer fr What is the total revenue?\n",
    ]


def test_blip2_gets_question_answer_prompts(vlms, seen):
    vlm = vlms("blip2")
    calls = seen(vlm)
    vlm.chat([ChatMessage(role="system", content="Be an expert."), *question(1)])
    image_token = getattr(vlm.processor.image_token, "content", vlm.processor.image_token)
    query_tokens = image_token * vlm.model.config.num_query_tokens
    assert (
        prompt_text(vlm, calls[0]) == f"{query_tokens}Question: What is the total revenue? Answer:"
    )


# -- several pages for single-image families ------------------------------------------------


@pytest.mark.parametrize("kind", ["paligemma", "blip2"])
def test_tile_strategy_asks_once_about_a_grid_of_the_pages(kind, vlms, seen):
    vlm = variant(vlms(kind), multi_image_strategy="tile")
    calls = seen(vlm)
    response = vlm.chat(question(3))
    assert len(calls) == 1 and calls[0]["pixel_values"].shape[0] == 1
    assert image_tokens(vlm, calls[0]) == expected_image_tokens(vlm, kind, (0, 0))
    assert not response.message.content.startswith("report.pdf")  # one answer, no labels


def test_tile_pages_grid():
    pages = [Image.new("RGB", size, "red") for size in PAGE_SIZES[:3]]
    grid = tile_pages(pages)
    assert grid.size == (2 * 120 + 8, 2 * 100 + 8)  # 2 x 2 cells of the largest page, a gutter
    assert grid.getpixel((0, 0)) == (255, 0, 0)
    assert grid.getpixel((120 + 8 + 119, 99)) == (255, 255, 255)  # page 2 is 40 px high
    assert tile_pages(pages[:1]) is pages[0]


def test_per_page_labels_name_citation_sources(vlms):
    vlm = vlms("paligemma")
    blocks = [
        TextBlock(text="file_name: a.pdf\npage_number: 4 Source 1:"),
        ImageBlock(image=png_bytes("red")),
        TextBlock(text="Source 2:"),
        ImageBlock(image=png_bytes("blue")),
        ImageBlock(image=png_bytes("green")),
        TextBlock(text="Query: What?\nAnswer:"),
    ]
    answer = vlm.chat([ChatMessage(role="user", blocks=blocks)]).message.content
    assert [line.split(": ")[0] for line in answer.split("\n")] == [
        "Source 1 (a.pdf, page 4)",
        "Source 2",
        "Image 3",
    ]


# -- context window --------------------------------------------------------------------------


def test_context_window_overflow_is_an_error_with_the_numbers(vlms):
    vlm = vlms("llava")
    usage = vlm.chat(question(4)).additional_kwargs
    small = variant(vlm, context_window=usage["prompt_tokens"] - 20)
    n_image_tokens = sum(expected_image_tokens(vlm, "llava", size) for size in PAGE_SIZES)
    with pytest.raises(ContextWindowExceededError) as e:
        small.chat(question(4))
    assert f"{n_image_tokens} image tokens for 4 image(s)" in str(e.value)
    assert f"context window of {usage['prompt_tokens'] - 20} tokens" in str(e.value)
    assert "drop_pages_to_fit=True" in str(e.value)


def test_drop_pages_to_fit_drops_the_last_pages_with_a_warning(vlms, seen):
    vlm = vlms("llava")
    usage = vlm.chat(question(4)).additional_kwargs
    per_page = expected_image_tokens(vlm, "llava", PAGE_SIZES[0])
    # Room for the prompt with two pages fewer (and the answer).
    room = usage["prompt_tokens"] - 2 * per_page + vlm.max_new_tokens
    fitted = variant(vlm, context_window=room, drop_pages_to_fit=True)
    calls = seen(fitted)
    dropped = r"dropped 2 page image\(s\) \(report.pdf, page 3; report.pdf, page 4\)"
    with pytest.warns(UserWarning, match=dropped):
        response = fitted.chat(question(4))
    assert response.additional_kwargs["images"] == 2
    assert image_tokens(fitted, calls[0]) == 2 * per_page
    kept = calls[0]["pixel_values"]
    reference = vlm.processor.image_processor(
        [
            Image.new("RGB", size, colour)
            for size, colour in zip(PAGE_SIZES[:2], COLOURS[:2], strict=True)
        ],
        return_tensors="pt",
    )["pixel_values"]
    assert (kept == reference).all()  # the best-ranked (first) pages are the ones kept


def test_drop_pages_to_fit_still_refuses_when_one_page_does_not_fit(vlms):
    vlm = variant(vlms("llava"), context_window=20, drop_pages_to_fit=True)
    with pytest.raises(ContextWindowExceededError, match="even with one page left"):
        vlm.chat(question(3))


def test_context_window_above_the_models_is_lowered_with_a_warning(vlms):
    vlm = vlms("blip2")
    with pytest.warns(UserWarning, match="more than"):
        larger = variant(vlm, context_window=10**6)
    assert larger.context_window == vlm.model.config.get_text_config().max_position_embeddings


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(vlms, tmp_path):
    vlm = vlms("llava")
    with pytest.raises(EmptyInputError, match="no messages"):
        vlm.chat([])
    with pytest.raises(EmptyInputError, match="last user message has no text"):
        vlm.chat([ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes())])])
    with pytest.raises(EmptyInputError, match="last user message has no text"):
        vlm.chat([ChatMessage(role="user", content="   ")])
    with pytest.raises(EmptyInputError, match="does not end with a user message"):
        vlm.chat([*question(1), ChatMessage(role="assistant", content="Sure.")])
    garbage = ImageBlock(image=b"this is not an image at all", image_mimetype="image/png")
    with pytest.raises(UnreadableDocumentError, match="message 0, image 1.*not an image"):
        vlm.chat([ChatMessage(role="user", blocks=[garbage, TextBlock(text="What?")])])
    vanished = tmp_path / "vanished.png"
    vanished.write_bytes(png_bytes())
    block = ImageBlock(path=vanished)  # pydantic checks the file exists when the block is made
    vanished.unlink()
    with pytest.raises(UnreadableDocumentError, match="vanished.png"):
        vlm.chat([ChatMessage(role="user", blocks=[block, TextBlock(text="What?")])])
    with pytest.raises(TypeError, match="'audio' block"):
        vlm.chat(
            [ChatMessage(role="user", blocks=[AudioBlock(audio=b"RIFF"), TextBlock(text="?")])]
        )
    with pytest.raises(EmptyInputError, match="PaliGemma answers questions about an image"):
        vlms("paligemma").chat([ChatMessage(role="user", content="What?")])
    with pytest.raises(ValueError, match="multi_image_strategy"):
        variant(vlm, multi_image_strategy="collage")


def test_errors_in_the_generation_thread_reach_the_stream(vlms, monkeypatch):
    vlm = vlms("llava")

    def broken_generate(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vlm.model, "generate", broken_generate)
    with pytest.raises(RuntimeError, match="simulated"):
        list(vlm.stream_chat(question(1)))


# -- image inputs ----------------------------------------------------------------------------


def test_every_image_source_gives_the_same_prompt(vlms, seen, tmp_path):
    vlm = vlms("llava_next")
    data = png_bytes("red", (60, 100))
    path = tmp_path / "page.png"
    path.write_bytes(data)
    encoded = base64.b64encode(data)
    sources = [
        ImageBlock(image=data),
        ImageBlock(image=encoded),
        ImageBlock(path=path),
        ImageBlock(url=f"data:image/png;base64,{encoded.decode()}"),
    ]
    calls = seen(vlm)
    answers = {
        vlm.chat(
            [ChatMessage(role="user", blocks=[source, TextBlock(text="What?")])]
        ).message.content
        for source in sources
    }
    node = ImageNode(image=encoded.decode(), image_mimetype="image/png")
    answers.add(vlm.complete("What?", image_documents=[node]).text)
    answers.add(vlm.complete("What?", image_documents=[NodeWithScore(node=node, score=1.0)]).text)
    assert len(answers) == 1
    assert all((call["pixel_values"] == calls[0]["pixel_values"]).all() for call in calls)


def test_transparent_and_greyscale_pages_are_read_as_rgb(vlms):
    vlm = vlms("llava")
    for image in [Image.new("RGBA", (30, 30), (0, 0, 0, 0)), Image.new("I;16", (30, 30), 65535)]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        vlm.chat(
            [
                ChatMessage(
                    role="user", blocks=[ImageBlock(image=buffer.getvalue()), TextBlock(text="?")]
                )
            ]
        )


# -- generation settings ---------------------------------------------------------------------


def test_beam_search_streams_its_whole_answer_at_once(vlms):
    vlm = variant(vlms("llava"), num_beams=2)
    answer = vlm.chat(question(1)).message.content
    chunks = list(vlm.stream_chat(question(1)))
    assert len(chunks) <= 1 and "".join(chunk.delta for chunk in chunks) == answer


def test_call_kwargs_override_generation_settings(vlms, seen):
    vlm = vlms("llava")
    calls = seen(vlm)
    response = vlm.chat(question(1), max_new_tokens=2, min_new_tokens=2)
    assert calls[0]["max_new_tokens"] == 2 and response.additional_kwargs["completion_tokens"] == 2
    sampled = variant(vlm, do_sample=True, temperature=0.7, top_p=0.9)
    sampled.chat(question(1))
    assert calls[1]["do_sample"] and calls[1]["temperature"] == 0.7 and calls[1]["top_p"] == 0.9
    assert "temperature" not in calls[0]  # greedy decoding gets no sampling settings
    variant(vlm, do_sample=True, temperature=0.0).chat(question(1))
    assert not calls[2]["do_sample"] and "temperature" not in calls[2]  # 0 means greedy


# -- LlamaIndex integration ------------------------------------------------------------------


def test_config_round_trips_through_to_dict_and_from_dict(vlms):
    vlm = variant(
        vlms("llava_next"),
        max_new_tokens=5,
        drop_pages_to_fit=True,
        system_prompt="Answer briefly.",
        generate_kwargs={"repetition_penalty": 1.1},
    )
    config = vlm.to_dict()
    assert config["class_name"] == HuggingFaceVLM.class_name() == "HuggingFaceVLM"
    assert json.loads(json.dumps(config)) == config
    assert "model" not in config and "processor" not in config
    restored = HuggingFaceVLM.from_dict(config)
    assert restored.to_dict() == config
    assert restored.chat(question(1)).message.content == vlm.chat(question(1)).message.content


def test_settings_llm_accepts_it(vlms):
    vlm = vlms("llava")
    previous = Settings._llm
    try:
        Settings.llm = vlm
        assert Settings.llm is vlm
    finally:
        Settings._llm = previous


def test_instrumentation_events_and_callbacks_fire(vlms):
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    vlm = variant(vlms("llava"))
    debug = LlamaDebugHandler()
    vlm.callback_manager = CallbackManager([debug])
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
    kinds = [type(event).__name__ for event in events]
    assert kinds.count("LLMChatStartEvent") == 2 and kinds.count("LLMChatEndEvent") >= 2
    assert events[1].response.additional_kwargs["image_tokens"] == 32
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
