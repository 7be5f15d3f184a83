"""Full-size architectures with random weights, shared by the benchmarks' ``--full`` runs.

Random weights have the real models' compute and memory, so throughput measured with them is
what the released checkpoints would give, without downloading them. :func:`save_random` builds
one with the real architecture's sizes (from the checkpoint's published ``config.json``), a real
image processor at the checkpoint's resolution and the tiny checkpoint's tokenizer (its ids are
valid in every full vocabulary; it carries the family's chat template and special tokens), and
saves it in transformers' format, so the benchmark loads it exactly as a user loads a released
checkpoint: ``ColPaliEncoder.from_pretrained(path)``, or ``HuggingFaceVLM.from_pretrained(path,
quantization="4bit")``.

    path = save_random("qwen2.5-vl-7b", directory, device="cuda")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llama_index_vlm.checkpoints import load_processor
from llama_index_vlm.processors import image_only
from llama_index_vlm.testing import make_tiny_checkpoint

_QWEN_VISION_MERGE = {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}


def paligemma_3b_448_config(image_token_id: int, eos_token_id=None, pad_token_id=None):
    """The PaliGemma-3B (448 px) architecture behind ColPali v1.x and PaliGemma mix models."""
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    return PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=448,
            patch_size=14,
            projection_dim=2048,
        ),
        text_config=GemmaConfig(
            vocab_size=257216,
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=18,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            max_position_embeddings=8192,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        ),
        image_token_id=image_token_id,
        projection_dim=2048,
        hidden_size=2048,
    )


def llava_15_7b_config(image_token_id: int, eos_token_id=None, pad_token_id=None):
    """The LLaVA-1.5-7B architecture: CLIP ViT-L/14 at 336 px and a Llama-2-7B (Vicuna)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        text_config=LlamaConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        ),
        image_token_id=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def _tiny(kind: str, directory: Path) -> tuple[Any, Any]:
    """The tiny checkpoint's processor and tokenizer of a family."""
    path = make_tiny_checkpoint(kind, directory / f"tiny-{kind}")
    from transformers import AutoConfig

    processor = load_processor(str(path), AutoConfig.from_pretrained(path).model_type)
    return processor, processor.tokenizer


def _colpali(directory: Path) -> tuple[str, Any, Any]:
    from transformers import ColPaliConfig, ColPaliProcessor, SiglipImageProcessorPil

    _, tokenizer = _tiny("colpali", directory)
    image_processor = SiglipImageProcessorPil(
        size={"height": 448, "width": 448},
        image_seq_length=1024,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = ColPaliConfig(
        vlm_config=paligemma_3b_448_config(processor.image_token_id), embedding_dim=128
    )
    return "ColPaliForRetrieval", config, processor


def _qwen_image_processor(max_tokens: int) -> Any:
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 4 * 28 * 28, "longest_edge": max_tokens * 28 * 28},
    )


def _qwen_ids(tokenizer: Any) -> dict[str, int]:
    names = ("image_pad", "video_pad", "vision_start", "vision_end")
    return {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>") for name in names}


def _qwen2_vl_2b_config(tokenizer: Any) -> Any:
    """Qwen2-VL-2B, the backbone of ColQwen2 v1.0."""
    from transformers import Qwen2VLConfig

    ids = _qwen_ids(tokenizer)
    return Qwen2VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [16, 24, 24],
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 32,
            "embed_dim": 1280,
            "hidden_size": 1536,
            "num_heads": 16,
            "mlp_ratio": 4,
            **_QWEN_VISION_MERGE,
        },
        image_token_id=ids["image_pad"],
        video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )


def _colqwen2(directory: Path) -> tuple[str, Any, Any]:
    from transformers import ColQwen2Config, ColQwen2Processor

    _, tokenizer = _tiny("colqwen2", directory)
    # ColQwen2 v1.0 reads a page in at most 768 image tokens.
    processor = ColQwen2Processor(image_processor=_qwen_image_processor(768), tokenizer=tokenizer)
    config = ColQwen2Config(vlm_config=_qwen2_vl_2b_config(tokenizer), embedding_dim=128)
    return "ColQwen2ForRetrieval", config, processor


def _colmodernvbert(directory: Path, split: bool = True) -> tuple[str, Any, Any]:
    """ColModernVBERT (about 250M): SigLIP2-base/16 at 512 px and a 150M ModernBERT encoder.

    With ``split``, a page is cut into 512-px tiles up to 2048 px plus a global image (SmolVLM's
    setting, 13 tiles for an A4 page); without, it is one 512-px image. The released checkpoint
    ships no image processor settings of its own, so both are measured.
    """
    from transformers import (
        ColModernVBertConfig,
        ColModernVBertProcessor,
        Idefics3ImageProcessorPil,
        ModernBertConfig,
        ModernVBertConfig,
        SiglipVisionConfig,
    )

    _, tokenizer = _tiny("colmodernvbert", directory)
    processor = ColModernVBertProcessor(
        image_processor=Idefics3ImageProcessorPil(
            do_image_splitting=split,
            size={"longest_edge": 2048 if split else 512},
            max_image_size={"longest_edge": 512},
        ),
        tokenizer=tokenizer,
        image_seq_len=64,
    )
    vlm_config = ModernVBertConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=512,
            patch_size=16,
        ),
        text_config=ModernBertConfig(
            vocab_size=50368,
            hidden_size=768,
            intermediate_size=1152,
            num_hidden_layers=22,
            num_attention_heads=12,
            max_position_embeddings=8192,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=processor.image_token_id,
        pixel_shuffle_factor=4,
    )
    return "ColModernVBertForRetrieval", ColModernVBertConfig(vlm_config=vlm_config), processor


def _llava_1_5_7b(directory: Path) -> tuple[str, Any, Any]:
    """LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px (576 image tokens) and Llama-2-7B."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tiny, tokenizer = _tiny("llava", directory)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=tiny.chat_template,
    )
    config = llava_15_7b_config(
        tokenizer.convert_tokens_to_ids("<image>"), tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    return "LlavaForConditionalGeneration", config, processor


def _paligemma_3b_448(directory: Path) -> tuple[str, Any, Any]:
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    _, tokenizer = _tiny("paligemma", directory)
    processor = PaliGemmaProcessor(
        image_processor=SiglipImageProcessorPil(
            size={"height": 448, "width": 448},
            image_seq_length=1024,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        ),
        tokenizer=tokenizer,
    )
    config = paligemma_3b_448_config(
        processor.image_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    return "PaliGemmaForConditionalGeneration", config, processor


def _qwen2_5_vl_7b(directory: Path) -> tuple[str, Any, Any]:
    """Qwen2.5-VL-7B-Instruct, with its hub processor's 16384-token page maximum."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    tiny, tokenizer = _tiny("qwen2_5_vl", directory)
    processor = image_only(Qwen2_5_VLProcessor)(
        image_processor=_qwen_image_processor(16384),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tiny.chat_template,
    )
    ids = _qwen_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [16, 24, 24],
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            **_QWEN_VISION_MERGE,
        },
        image_token_id=ids["image_pad"],
        video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )
    return "Qwen2_5_VLForConditionalGeneration", config, processor


def _smolvlm_256m(directory: Path) -> tuple[str, Any, Any]:
    """SmolVLM-256M-Instruct: SigLIP-base/16 at 512 px (64 tokens a tile, up to 4x4 tiles and a
    global image) and SmolLM2-135M."""
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMImageProcessorPil,
        SmolVLMProcessor,
        SmolVLMVisionConfig,
    )

    tiny, tokenizer = _tiny("smolvlm", directory)
    processor = image_only(SmolVLMProcessor)(
        image_processor=SmolVLMImageProcessorPil(
            do_image_splitting=True,
            size={"longest_edge": 2048},
            max_image_size={"longest_edge": 512},
        ),
        tokenizer=tokenizer,
        video_processor=None,
        image_seq_len=64,
        chat_template=tiny.chat_template,
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=512,
            patch_size=16,
        ),
        text_config=LlamaConfig(
            vocab_size=49280,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        scale_factor=4,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    return "SmolVLMForConditionalGeneration", config, processor


#: Retrievers, by name: ``save_random`` builds their full-size architecture.
RETRIEVERS: dict[str, Callable[[Path], tuple[str, Any, Any]]] = {
    "colpali": _colpali,
    "colqwen2": _colqwen2,
    "colmodernvbert": _colmodernvbert,
    "colmodernvbert-1tile": lambda directory: _colmodernvbert(directory, split=False),
}
#: Answer models, by name.
ANSWERERS: dict[str, Callable[[Path], tuple[str, Any, Any]]] = {
    "llava-1.5-7b": _llava_1_5_7b,
    "qwen2.5-vl-7b": _qwen2_5_vl_7b,
    "paligemma-3b-448": _paligemma_3b_448,
    "smolvlm-256m": _smolvlm_256m,
}


def save_random(name: str, directory: Path, device: str = "cpu") -> Path:
    """Save architecture ``name`` with random bfloat16 weights under ``directory``; its path.

    The weights are initialised on ``device`` (a GPU initialises a 7B model in seconds) and
    saved as safetensors, with the processor, as a released checkpoint is.
    """
    import transformers

    build = {**RETRIEVERS, **ANSWERERS}[name]
    class_name, config, processor = build(directory)
    with torch.device(device):
        model = getattr(transformers, class_name)._from_config(config, dtype=torch.bfloat16)
    tokenizer = processor.tokenizer
    if hasattr(model, "generation_config") and model.can_generate():
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    path = directory / name
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    return path


def parameters_b(path: Path) -> float:
    """The saved checkpoint's parameters, in billions (from its safetensors headers)."""
    from safetensors import safe_open

    total = 0
    for weights in path.glob("*.safetensors"):
        with safe_open(weights, "pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 - safe_open has no iteration
                total += _numel(tensors.get_slice(name).get_shape())
    return total / 1e9


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
