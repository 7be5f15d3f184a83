"""Tiny BLIP-2 checkpoints: a ViT, a Q-Former of 4 query tokens, an OPT language model."""

from __future__ import annotations

from pathlib import Path

from llama_index_vlm.testing.parts import (
    HIDDEN,
    IMAGE_SIZE,
    VISION_SIZES,
    fast_tokenizer,
    save_generator,
)

_NUM_QUERY_TOKENS = 4


def build_blip2(path: Path) -> None:
    """``Blip2ForConditionalGeneration`` with ``Blip2Processor``."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    # The real OPT tokenizer uses "</s>" as both bos and eos.
    tokenizer = fast_tokenizer(
        {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"},
        ["<image>"],
    )
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        num_query_tokens=_NUM_QUERY_TOKENS,
    )
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**VISION_SIZES),
        qformer_config=Blip2QFormerConfig(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            encoder_hidden_size=HIDDEN,
            vocab_size=len(tokenizer),
        ),
        text_config=OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            ffn_dim=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        num_query_tokens=_NUM_QUERY_TOKENS,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    save_generator(Blip2ForConditionalGeneration(config), tokenizer, processor, path)
