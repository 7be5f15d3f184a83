"""Tiny checkpoints of Idefics3's design: the SmolVLM and Idefics3 answerers, and the
ColModernVBERT retriever.

A page is split into tiles of the vision encoder's size plus one downscaled global image; each
tile's patches are pixel-shuffled into a few image tokens, framed by ``<fake_token_around_image>``
and a ``<row_i_col_j>`` (or ``<global-img>``) tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index_vlm.testing import chat_templates
from llama_index_vlm.testing.parts import (
    EMBEDDING_DIM,
    HIDDEN,
    IMAGE_SIZE,
    LANGUAGE_MODEL_SIZES,
    PATCH,
    VISION_SIZES,
    fast_tokenizer,
    save_generator,
)

_SCALE_FACTOR = 2
#: Image tokens per tile: the tile's patches, pixel-shuffled by the scale factor.
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH) ** 2 // _SCALE_FACTOR**2
_TILE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]


def _image_processor(processor_class: str) -> Any:
    import transformers

    # Pages up to 2x2 tiles of the vision encoder's size, plus the global image.
    return getattr(transformers, processor_class)(
        do_image_splitting=True,
        size={"longest_edge": 2 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )


def _tokenizer(bos: str, eos: str, pad: str) -> Any:
    return fast_tokenizer(
        {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": "<unk>"},
        [*_TILE_TOKENS, "<end_of_utterance>"],
    )


def _text_config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        **LANGUAGE_MODEL_SIZES,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_smolvlm(path: Path) -> None:
    """``SmolVLMForConditionalGeneration`` with ``SmolVLMProcessor`` and its chat template."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMProcessor,
        SmolVLMVisionConfig,
    )

    from llama_index_vlm.processors import image_only

    # As in SmolVLM: <|im_start|> opens the prompt, <end_of_utterance> ends every turn.
    tokenizer = _tokenizer("<|im_start|>", "<end_of_utterance>", "<|im_end|>")
    processor = image_only(SmolVLMProcessor)(
        image_processor=_image_processor("SmolVLMImageProcessorPil"),
        tokenizer=tokenizer,
        video_processor=None,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=chat_templates.SMOLVLM,
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**VISION_SIZES),
        text_config=_text_config(tokenizer),
        scale_factor=_SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    save_generator(SmolVLMForConditionalGeneration(config), tokenizer, processor, path)


def build_idefics3(path: Path) -> None:
    """``Idefics3ForConditionalGeneration`` with ``Idefics3Processor``."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    # As in Idefics3-8B-Llama3: Llama 3's bos, <end_of_utterance> ends every turn.
    tokenizer = _tokenizer("<|begin_of_text|>", "<end_of_utterance>", "<|end_of_text|>")
    processor = Idefics3Processor(
        image_processor=_image_processor("Idefics3ImageProcessorPil"),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=chat_templates.IDEFICS3,
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**VISION_SIZES),
        text_config=_text_config(tokenizer),
        scale_factor=_SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    save_generator(Idefics3ForConditionalGeneration(config), tokenizer, processor, path)


def build_colmodernvbert(path: Path) -> None:
    """``ColModernVBertForRetrieval``: a SigLIP encoder and a ModernBERT text model, with
    ``ColModernVBertProcessor``.
    """
    from transformers import (
        ColModernVBertConfig,
        ColModernVBertForRetrieval,
        ColModernVBertProcessor,
        ModernBertConfig,
        ModernVBertConfig,
        SiglipVisionConfig,
    )

    tokenizer = _tokenizer("<|begin_of_text|>", "<end_of_utterance>", "<pad>")
    processor = ColModernVBertProcessor(
        image_processor=_image_processor("Idefics3ImageProcessorPil"),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
    )
    text_config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=2048,
        local_attention=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        cls_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.eos_token_id,
    )
    vlm_config = ModernVBertConfig(
        vision_config=SiglipVisionConfig(**VISION_SIZES),
        text_config=text_config,
        image_token_id=processor.image_token_id,
        pixel_shuffle_factor=_SCALE_FACTOR,
    )
    model = ColModernVBertForRetrieval(
        ColModernVBertConfig(vlm_config=vlm_config, embedding_dim=EMBEDDING_DIM)
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
