"""Processors of video-capable models load without their video part, which needs torchvision
(processors.py): the checkpoint's own processor class, from its own files (transformers' layout
or the hub's older one), on machines with torchvision and without."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import transformers
from PIL import Image

from llama_index_vlm.errors import VLMError
from llama_index_vlm.processors import image_only, load_processor

PAGE = Image.new("RGB", (60, 100), "red")
CONVERSATION = [
    {"role": "user", "content": [{"type": "image", "image": PAGE}, {"type": "text", "text": "Hi?"}]}
]


def _tokenise(processor) -> dict:
    return processor.apply_chat_template(
        CONVERSATION,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def _hub_layout(source, target) -> None:
    """The layout of Qwen/Qwen2.5-VL-*-Instruct on the hub: the image processor's settings in
    preprocessor_config.json, the template in chat_template.json, no processor_config.json."""
    shutil.copytree(source, target)
    processor_config = json.loads((target / "processor_config.json").read_text())
    image_processor = {
        **processor_config["image_processor"],
        "processor_class": processor_config["processor_class"],
    }
    (target / "preprocessor_config.json").write_text(json.dumps(image_processor))
    (target / "processor_config.json").unlink()
    template = (target / "chat_template.jinja").read_text()
    (target / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (target / "chat_template.jinja").unlink()


@pytest.mark.parametrize(
    ("kind", "model_type", "class_name"),
    [
        ("qwen2_vl", "qwen2_vl", "Qwen2VLProcessor"),
        ("qwen3_vl", "qwen3_vl", "Qwen3VLProcessor"),
        ("smolvlm", "smolvlm", "SmolVLMProcessor"),
        ("llava_onevision", "llava_onevision", "LlavaOnevisionProcessor"),
    ],
)
def test_a_video_capable_processor_loads_as_its_own_class_without_a_video_part(
    kind, model_type, class_name, tiny_checkpoint
):
    processor = load_processor(str(tiny_checkpoint(kind)), model_type)
    assert isinstance(processor, getattr(transformers, class_name))
    assert type(processor).__name__ == class_name
    assert processor.get_attributes() == ["image_processor", "tokenizer"]


def test_the_hubs_older_layout_loads_and_tokenises_the_same(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint("qwen2_5_vl")
    _hub_layout(path, tmp_path / "hub")
    from_hub_layout = load_processor(str(tmp_path / "hub"), "qwen2_5_vl")
    original = load_processor(str(path), "qwen2_5_vl")
    assert from_hub_layout.chat_template == original.chat_template
    for name, value in _tokenise(original).items():
        assert (_tokenise(from_hub_layout)[name] == value).all(), name


def test_saving_and_loading_keeps_the_processors_settings(tiny_checkpoint, tmp_path):
    processor = load_processor(str(tiny_checkpoint("smolvlm")), "smolvlm")
    processor.save_pretrained(tmp_path)
    reloaded = load_processor(str(tmp_path), "smolvlm")
    assert reloaded.image_seq_len == processor.image_seq_len
    assert reloaded.chat_template == processor.chat_template


def test_asking_for_a_video_says_why_there_is_no_video_processor(tiny_checkpoint):
    processor = load_processor(str(tiny_checkpoint("qwen2_vl")), "qwen2_vl")
    video = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(VLMError, match="without its video processor"):
        processor(text="<|vision_start|><|video_pad|><|vision_end|>?", videos=[video])


def test_a_processor_without_a_video_part_loads_through_auto_processor(tiny_checkpoint):
    processor = load_processor(str(tiny_checkpoint("gemma3")), "gemma3")
    assert type(processor) is transformers.Gemma3Processor


def test_the_image_only_class_is_built_once_per_processor_class():
    assert image_only(transformers.Qwen2VLProcessor) is image_only(transformers.Qwen2VLProcessor)
