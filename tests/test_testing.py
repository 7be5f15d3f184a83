"""Tiny checkpoints: every kind builds, saves and loads back through the public from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from llama_index_vlm.processors import load_processor
from llama_index_vlm.testing import TINY_CHECKPOINT_KINDS, make_tiny_checkpoint

EXPECTED_CLASSES = {
    "colpali": "ColPaliForRetrieval",
    "colqwen2": "ColQwen2ForRetrieval",
    "colqwen2_5": "ColQwen2ForRetrieval",
    "colmodernvbert": "ColModernVBertForRetrieval",
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "blip2": "Blip2ForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
}
#: The prompt each chat-template kind's template writes for one image and "Hi?", as the real
#: checkpoint's does (its model card shows the same).
CHAT_PROMPTS = {
    "llava": "USER: <image>\nHi? ASSISTANT:",
    "llava_next": "[INST] <image>\nHi? [/INST]",
    "llava_onevision": "<|im_start|>user <image>\nHi?<|im_end|><|im_start|>assistant\n",
    "qwen2_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "smolvlm": "<|im_start|>User:<image>Hi?<end_of_utterance>\nAssistant:",
    "idefics3": "<|begin_of_text|>User:<image>Hi?<end_of_utterance>\nAssistant:",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>Hi?<end_of_turn>\n<start_of_turn>model\n",
}


def test_all_required_kinds_exist():
    assert set(EXPECTED_CLASSES) <= set(TINY_CHECKPOINT_KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED_CLASSES))
def test_kind_declares_its_real_architecture(kind, tiny_checkpoint):
    config = AutoConfig.from_pretrained(tiny_checkpoint(kind))
    assert config.architectures == [EXPECTED_CLASSES[kind]]


@pytest.mark.parametrize("kind", sorted(EXPECTED_CLASSES))
def test_kind_reloads_through_from_pretrained_as_its_real_class(kind, tiny_checkpoint):
    path = tiny_checkpoint(kind)
    if kind.startswith("col"):  # no Auto class maps to the retrievers
        model = getattr(transformers, EXPECTED_CLASSES[kind]).from_pretrained(path)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(model).__name__ == EXPECTED_CLASSES[kind]


@pytest.mark.parametrize("kind", sorted(EXPECTED_CLASSES))
def test_kinds_locally_trained_tokenizer_round_trips_text(kind, tiny_checkpoint):
    path = tiny_checkpoint(kind)
    processor = load_processor(str(path), AutoConfig.from_pretrained(path).model_type)
    ids = processor.tokenizer("What was the 2023 revenue?", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids) == "What was the 2023 revenue?"


@pytest.mark.parametrize("kind", sorted(CHAT_PROMPTS))
def test_chat_kinds_have_the_real_chat_template(kind, tiny_checkpoint):
    path = tiny_checkpoint(kind)
    processor = load_processor(str(path), AutoConfig.from_pretrained(path).model_type)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == CHAT_PROMPTS[kind]


def test_generator_kinds_generate_text(tiny_checkpoint):
    path = tiny_checkpoint("llava")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    inputs = processor(
        images=[Image.new("RGB", (40, 30), "white")],
        text="USER: <image>\nHi? ASSISTANT:",
        return_tensors="pt",
    )
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4


def _weights(path, seed: int) -> dict:
    return load_file(make_tiny_checkpoint("colpali", path, seed=seed) / "model.safetensors")


@pytest.fixture(scope="module")
def seed_7_weights(tmp_path_factory):
    return _weights(tmp_path_factory.mktemp("seed-7"), seed=7)


def test_the_same_seed_gives_identical_weights(seed_7_weights, tmp_path):
    again = _weights(tmp_path, seed=7)
    assert seed_7_weights.keys() == again.keys()
    assert all(torch.equal(seed_7_weights[name], again[name]) for name in seed_7_weights)


def test_another_seed_gives_other_weights(seed_7_weights, tmp_path):
    other = _weights(tmp_path, seed=8)
    assert any(not torch.equal(seed_7_weights[name], other[name]) for name in seed_7_weights)


def test_existing_checkpoint_is_reused_not_rebuilt(tmp_path):
    path = make_tiny_checkpoint("blip2", tmp_path / "blip2")
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert make_tiny_checkpoint("blip2", path) == path
    assert weights.stat().st_mtime_ns == before


def test_a_finished_checkpoint_is_marked_with_its_kind(tiny_checkpoint):
    marker = json.loads((tiny_checkpoint("blip2") / "llama_index_vlm_tiny.json").read_text())
    assert marker["kind"] == "blip2"


def test_half_built_checkpoint_is_rebuilt(tmp_path):
    path = tmp_path / "llava"
    path.mkdir()
    (path / "config.json").write_text("{}")  # an interrupted build: no marker
    make_tiny_checkpoint("llava", path)
    assert AutoConfig.from_pretrained(path).model_type == "llava"


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny checkpoint kind 'gpt5'"):
        make_tiny_checkpoint("gpt5", tmp_path)
