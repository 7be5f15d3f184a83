"""Tiny Gemma 3 checkpoints: a SigLIP encoder whose patches are average-pooled into a fixed
number of soft tokens per image, and a Gemma 3 language model with sliding-window layers."""

from __future__ import annotations

from pathlib import Path

from llama_index_vlm.testing import chat_templates
from llama_index_vlm.testing.parts import (
    HIDDEN,
    IMAGE_SIZE,
    LANGUAGE_MODEL_SIZES,
    PATCH,
    VISION_SIZES,
    fast_tokenizer,
    save_generator,
)

#: Soft tokens per image: the 4x4 patches pooled 2x2 (the real Gemma 3: 64x64 pooled to 256).
MM_TOKENS_PER_IMAGE = ((IMAGE_SIZE // PATCH) // 2) ** 2


def build_gemma3(path: Path) -> None:
    """``Gemma3ForConditionalGeneration`` with ``Gemma3Processor`` and Gemma 3's chat template."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    # Gemma 3's tokenizer names its image tokens: <start_of_image> is the placeholder the chat
    # template writes, which the processor expands to the soft tokens between it and
    # <end_of_image>.
    image_tokens = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer = fast_tokenizer(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        ["<start_of_turn>", "<end_of_turn>", *image_tokens.values()],
        named=image_tokens,
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        image_seq_length=MM_TOKENS_PER_IMAGE,
        chat_template=chat_templates.GEMMA3,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in image_tokens.items()}
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**VISION_SIZES),
        text_config=Gemma3TextConfig(
            **LANGUAGE_MODEL_SIZES,
            vocab_size=len(tokenizer),
            head_dim=HIDDEN // 2,
            max_position_embeddings=2048,
            sliding_window=64,
            layer_types=["sliding_attention"],
            query_pre_attn_scalar=HIDDEN // 2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
        image_token_index=ids["image_token"],
    )
    save_generator(Gemma3ForConditionalGeneration(config), tokenizer, processor, path)
