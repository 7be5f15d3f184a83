"""Parity with plain transformers: for every answer family, HuggingFaceVLM gives
``model.generate`` exactly the inputs the model card's code builds, and greedy decoding returns
exactly the model card's tokens."""

from __future__ import annotations

import pytest
import torch
from chats import (
    KINDS,
    MULTI_IMAGE_KINDS,
    SINGLE_IMAGE_KINDS,
    page_image,
    pages_conversation,
    plain_inputs,
    question,
)
from llama_index.core.base.llms.types import ChatMessage

QUESTION = "What is the total revenue?"


def _model_card_inputs(vlm, kind: str, image) -> dict:
    """The inputs the model card's code builds for one image and :data:`QUESTION`."""
    processor = vlm.processor
    if kind == "paligemma":  # a task prefix after the image placeholder
        inputs = processor(
            images=[image], text=f"{processor.image_token}answer en {QUESTION}", return_tensors="pt"
        )
        inputs.pop("labels", None)
        return inputs
    if kind == "blip2":
        return processor(images=[image], text=f"Question: {QUESTION} Answer:", return_tensors="pt")
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}],
        }
    ]
    return plain_inputs(vlm, conversation)


def _model_card_answer(vlm, inputs: dict) -> list[int]:
    """Greedy new tokens of ``model.generate`` on ``inputs``, as the model card decodes them."""
    with torch.inference_mode():
        output = vlm.model.generate(**inputs, max_new_tokens=vlm.max_new_tokens, do_sample=False)
    prompt_length = 0 if vlm.model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    return output[0, prompt_length:].tolist()


def _same_tensors(ours: dict, theirs: dict) -> None:
    assert set(theirs) <= set(ours)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("kind", KINDS)
def test_the_generate_inputs_are_the_model_cards(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.complete(QUESTION, image_documents=[page_image(0)])
    _same_tensors(calls[0], _model_card_inputs(vlm, kind, page_image(0)))


@pytest.mark.parametrize("kind", KINDS)
def test_the_greedy_answer_is_the_model_cards_token_for_token(kind, vlms):
    vlm = vlms(kind)
    response = vlm.complete(QUESTION, image_documents=[page_image(0)])
    tokens = _model_card_answer(vlm, _model_card_inputs(vlm, kind, page_image(0)))
    expected = vlm.processor.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
    assert response.text == expected
    assert response.additional_kwargs["completion_tokens"] == len(tokens)


@pytest.mark.parametrize("kind", KINDS)
def test_different_pages_give_generate_different_pixels(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.complete(QUESTION, image_documents=[page_image(0)])
    vlm.complete(QUESTION, image_documents=[page_image(1)])
    assert not torch.equal(calls[0]["pixel_values"], calls[1]["pixel_values"])


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_several_pages_are_one_prompt_of_the_model_cards_interleaved_messages(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.chat(question(3))
    assert len(calls) == 1
    _same_tensors(calls[0], plain_inputs(vlm, pages_conversation(3)))


@pytest.mark.parametrize("kind", MULTI_IMAGE_KINDS)
def test_a_system_prompt_goes_through_the_chat_template(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.chat([ChatMessage(role="system", content="Answer briefly."), *question(2)])
    system = {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]}
    _same_tensors(calls[0], plain_inputs(vlm, [system, *pages_conversation(2)]))


@pytest.mark.parametrize("kind", SINGLE_IMAGE_KINDS)
def test_each_page_of_a_single_image_family_gets_the_model_cards_prompt(kind, vlms, seen):
    vlm = vlms(kind)
    calls = seen(vlm)
    vlm.chat(question(3))
    assert len(calls) == 3
    for index, call in enumerate(calls):
        _same_tensors(call, _model_card_inputs(vlm, kind, page_image(index)))
