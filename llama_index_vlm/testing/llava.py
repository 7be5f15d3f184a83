"""Tiny LLaVA checkpoints: LLaVA-1.5 and LLaVA-NeXT (CLIP vision, a Llama language model), and
LLaVA-OneVision (SigLIP vision, a Qwen2 language model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

# What LLaVA-1.5 and LLaVA-NeXT processors and configs share: CLIP patches without the CLS
# token ("default" strategy) from the second-to-last vision layer, one "<image>" placeholder.
_LLAVA_PROCESSOR_KWARGS = {
    "patch_size": PATCH,
    "vision_feature_select_strategy": "default",
    "image_token": "<image>",
    "num_additional_image_tokens": 1,
}


def _llama_tokenizer() -> Any:
    return fast_tokenizer(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        ["<image>"],
    )


def _llava_config_kwargs(tokenizer: Any) -> dict[str, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig

    return {
        # Two layers: the features come from the second-to-last.
        "vision_config": CLIPVisionConfig(
            **{**VISION_SIZES, "num_hidden_layers": 2}, projection_dim=HIDDEN
        ),
        "text_config": LlamaConfig(
            **LANGUAGE_MODEL_SIZES,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
    }


def build_llava(path: Path) -> None:
    """``LlavaForConditionalGeneration`` with ``LlavaProcessor`` and LLaVA-1.5's chat format."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _llama_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_templates.LLAVA,
        **_LLAVA_PROCESSOR_KWARGS,
    )
    config = LlavaConfig(**_llava_config_kwargs(tokenizer))
    save_generator(LlavaForConditionalGeneration(config), tokenizer, processor, path)


def build_llava_next(path: Path) -> None:
    """``LlavaNextForConditionalGeneration`` with any-resolution tiles of up to 2x2 cells and
    LLaVA-NeXT (Llama-2 chat) prompts.
    """
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = _llama_tokenizer()
    pinpoints = [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE] * 2]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_templates.LLAVA_NEXT,
        **_LLAVA_PROCESSOR_KWARGS,
    )
    config = LlavaNextConfig(image_grid_pinpoints=pinpoints, **_llava_config_kwargs(tokenizer))
    save_generator(LlavaNextForConditionalGeneration(config), tokenizer, processor, path)


def build_llava_onevision(path: Path) -> None:
    """``LlavaOnevisionForConditionalGeneration`` with any-resolution tiles of up to 2x2 cells,
    ``LlavaOnevisionProcessor`` and LLaVA-OneVision's (Qwen2 chat) prompts.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    from llama_index_vlm.processors import image_only

    tokenizer = fast_tokenizer(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    )
    pinpoints = [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE] * 2]
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_grid_pinpoints=pinpoints,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=chat_templates.LLAVA_ONEVISION,
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION_SIZES),
        text_config=Qwen2Config(
            **LANGUAGE_MODEL_SIZES,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    save_generator(LlavaOnevisionForConditionalGeneration(config), tokenizer, processor, path)
