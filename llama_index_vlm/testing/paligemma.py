"""Tiny checkpoints over a PaliGemma backbone: PaliGemma itself, and the ColPali retriever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index_vlm.testing.parts import (
    EMBEDDING_DIM,
    HIDDEN,
    IMAGE_SIZE,
    LANGUAGE_MODEL_SIZES,
    PATCH,
    VISION_SIZES,
    fast_tokenizer,
)


def _siglip_image_processor() -> Any:
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _gemma_tokenizer() -> Any:
    return fast_tokenizer(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        ["<image>"],
    )


def _paligemma_config(vocab_size: int, image_token_id: int, pad_token_id: int) -> Any:
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    return PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**VISION_SIZES, projection_dim=HIDDEN),
        text_config=GemmaConfig(
            **LANGUAGE_MODEL_SIZES,
            vocab_size=vocab_size,
            head_dim=HIDDEN // 2,
            max_position_embeddings=2048,
            pad_token_id=pad_token_id,
        ),
        image_token_id=image_token_id,
        projection_dim=HIDDEN,
        hidden_size=HIDDEN,
    )


def build_colpali(path: Path) -> None:
    """``ColPaliForRetrieval`` over a PaliGemma backbone, with ``ColPaliProcessor``."""
    from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor

    processor = ColPaliProcessor(
        image_processor=_siglip_image_processor(), tokenizer=_gemma_tokenizer()
    )
    tokenizer = processor.tokenizer
    vlm_config = _paligemma_config(len(tokenizer), processor.image_token_id, tokenizer.pad_token_id)
    model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm_config, embedding_dim=EMBEDDING_DIM))
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_paligemma(path: Path) -> None:
    """``PaliGemmaForConditionalGeneration`` with ``PaliGemmaProcessor``."""
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    processor = PaliGemmaProcessor(
        image_processor=_siglip_image_processor(), tokenizer=_gemma_tokenizer()
    )
    tokenizer = processor.tokenizer
    config = _paligemma_config(len(tokenizer), processor.image_token_id, tokenizer.pad_token_id)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
