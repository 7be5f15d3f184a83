"""Tiny checkpoints over a Qwen2-VL backbone: the ColQwen2 retriever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index_vlm.testing.parts import (
    EMBEDDING_DIM,
    HIDDEN,
    LANGUAGE_MODEL_SIZES,
    PATCH,
    fast_tokenizer,
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


def build_colqwen2(path: Path) -> None:
    """``ColQwen2ForRetrieval`` over a Qwen2-VL backbone, with ``ColQwen2Processor``."""
    from transformers import (
        ColQwen2Config,
        ColQwen2ForRetrieval,
        ColQwen2Processor,
        Qwen2VLImageProcessor,
    )

    tokenizer = fast_tokenizer(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, _QWEN_SPECIAL
    )
    factor = PATCH * _MERGE
    image_processor = Qwen2VLImageProcessor(
        patch_size=PATCH,
        merge_size=_MERGE,
        temporal_patch_size=2,
        # Real ColQwen2 caps pages at 768 merged patches; the tiny one at 4x4 merged patches.
        min_pixels=(2 * factor) ** 2,
        max_pixels=(4 * factor) ** 2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
    )
    processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL}
    vlm_config = _qwen2_vl_config(len(tokenizer), ids)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm_config, embedding_dim=EMBEDDING_DIM))
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _qwen2_vl_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2VLConfig

    head_dim = HIDDEN // 2
    return Qwen2VLConfig(
        text_config={
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
        },
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
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
