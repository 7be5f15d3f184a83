"""Tiny checkpoints over Qwen-VL backbones: the Qwen2-VL, Qwen2.5-VL and Qwen3-VL answerers, and
the ColQwen2 and ColQwen2.5 retrievers.

All share Qwen's vision tokens and a ViT whose patches are merged 2x2 into one image token, so a
page's image tokens follow its size (``min_pixels``..``max_pixels``), not a fixed count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index_vlm.testing import chat_templates
from llama_index_vlm.testing.parts import (
    EMBEDDING_DIM,
    HIDDEN,
    LANGUAGE_MODEL_SIZES,
    PATCH,
    fast_tokenizer,
    save_generator,
)

_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_MERGE = 2
_FACTOR = PATCH * _MERGE  # the side of one image token, in pixels
#: The tiny pages' image budget: between 2x2 and 4x4 image tokens (real checkpoints: up to
#: 16384 merged patches; ColQwen2: 768).
MIN_PIXELS = (2 * _FACTOR) ** 2
MAX_PIXELS = (4 * _FACTOR) ** 2


def _qwen_tokenizer() -> Any:
    # As in the real Qwen2-VL: eos is <|im_end|> for the chat models, pad is <|endoftext|>.
    return fast_tokenizer({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, _QWEN_SPECIAL)


def _image_processor(patch: int = PATCH) -> Any:
    from transformers import Qwen2VLImageProcessorPil

    factor = patch * _MERGE
    return Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=_MERGE,
        temporal_patch_size=2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
    )


def _ids(tokenizer: Any) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL}


def _text_config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    head_dim = HIDDEN // 2
    return {
        **LANGUAGE_MODEL_SIZES,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        # As in the real Qwen2-VL: bos is <|endoftext|>, eos is <|im_end|>.
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
        },
    }


def _vision_tokens(ids: dict[str, int]) -> dict[str, int]:
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _qwen2_vl_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=_text_config(vocab_size, ids),
        vision_config={
            "depth": 1,
            "embed_dim": HIDDEN,
            "hidden_size": HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": PATCH,
            "spatial_merge_size": _MERGE,
            "temporal_patch_size": 2,
        },
        **_vision_tokens(ids),
    )


def _qwen2_5_vl_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_text_config(vocab_size, ids),
        vision_config={
            # Two blocks: window attention in the first, full attention in the second.
            "depth": 2,
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "num_heads": 2,
            "out_hidden_size": HIDDEN,
            "patch_size": PATCH,
            "spatial_merge_size": _MERGE,
            "temporal_patch_size": 2,
            "window_size": 2 * _FACTOR,
            "fullatt_block_indexes": [1],
        },
        **_vision_tokens(ids),
    )


def _qwen3_vl_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen3VLConfig

    text = _text_config(vocab_size, ids)
    text["head_dim"] = HIDDEN // 2
    text["rope_parameters"] = {
        **text["rope_parameters"],
        "mrope_interleaved": True,
        "mrope_section": [2, 3, 3],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "num_heads": 2,
            "out_hidden_size": HIDDEN,
            "patch_size": 2 * PATCH,
            "spatial_merge_size": _MERGE,
            "temporal_patch_size": 2,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        **_vision_tokens(ids),
    )


def _build_answerer(
    path: Path, model_class: str, processor_class: str, patch: int, chat_template: str, config_for
) -> None:
    import transformers

    from llama_index_vlm.processors import image_only

    tokenizer = _qwen_tokenizer()
    # Built without a video processor, as llama-index-vlm loads it when torchvision is missing;
    # the saved files are the same either way.
    processor = image_only(getattr(transformers, processor_class))(
        image_processor=_image_processor(patch),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=chat_template,
    )
    model = getattr(transformers, model_class)(config_for(len(tokenizer), _ids(tokenizer)))
    save_generator(model, tokenizer, processor, path)


def build_qwen2_vl(path: Path) -> None:
    """``Qwen2VLForConditionalGeneration`` with ``Qwen2VLProcessor`` and its chat template."""
    _build_answerer(
        path,
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLProcessor",
        PATCH,
        chat_templates.QWEN2_VL,
        _qwen2_vl_config,
    )


def build_qwen2_5_vl(path: Path) -> None:
    """``Qwen2_5_VLForConditionalGeneration`` (window attention in its ViT)."""
    _build_answerer(
        path,
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLProcessor",
        PATCH,
        chat_templates.QWEN2_VL,
        _qwen2_5_vl_config,
    )


def build_qwen3_vl(path: Path) -> None:
    """``Qwen3VLForConditionalGeneration`` (16-pixel patches, deepstack features)."""
    _build_answerer(
        path,
        "Qwen3VLForConditionalGeneration",
        "Qwen3VLProcessor",
        2 * PATCH,
        chat_templates.QWEN3_VL,
        _qwen3_vl_config,
    )


def _build_retriever(path: Path, vlm_config_for) -> None:
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor

    # The retrievers' tokenizer ends texts with <|endoftext|>, as ColQwen2's does.
    tokenizer = fast_tokenizer(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, _QWEN_SPECIAL
    )
    processor = ColQwen2Processor(image_processor=_image_processor(), tokenizer=tokenizer)
    vlm_config = vlm_config_for(len(tokenizer), _ids(tokenizer))
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm_config, embedding_dim=EMBEDDING_DIM))
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_colqwen2(path: Path) -> None:
    """``ColQwen2ForRetrieval`` over a Qwen2-VL backbone, with ``ColQwen2Processor``."""
    _build_retriever(path, _qwen2_vl_config)


def build_colqwen2_5(path: Path) -> None:
    """``ColQwen2ForRetrieval`` over a Qwen2.5-VL backbone (ColQwen2.5), ``ColQwen2Processor``."""
    _build_retriever(path, _qwen2_5_vl_config)
