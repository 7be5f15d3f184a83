"""Tiny image-text retrieval checkpoints: BLIP-2's Q-Former with its ITC and ITM heads, SigLIP.

Built like the other tiny checkpoints (the sizes of :mod:`.parts`, a tokenizer trained offline,
random weights): ``Blip2ForImageTextRetrieval`` with a ``Blip2Processor``
whose tokenizer opens every text with ``[CLS]`` as BLIP-2's BERT tokenizer does (the Q-Former's
text embedding is that token's), and ``SiglipModel`` with a ``SiglipProcessor``.
"""

from __future__ import annotations

from pathlib import Path

from llama_index_vlm.testing.parts import HIDDEN, IMAGE_SIZE, VISION_SIZES, fast_tokenizer

_NUM_QUERY_TOKENS = 4
# Small, and different from the ColPali kinds' 128, so a test that mixes them up fails.
_IMAGE_TEXT_DIM = 64
_TEXT_POSITIONS = 64  # SigLIP's text length (its texts are padded to it, as in training)


def _bert_like_tokenizer():
    """A tokenizer that wraps a text in ``[CLS] ... [SEP]``, as BLIP-2's BERT tokenizer does."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = fast_tokenizer(
        {"bos_token": "[CLS]", "eos_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"},
        ["<image>"],
    )
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _siglip_tokenizer():
    """A tokenizer that ends a text with ``</s>`` and no start token, as SigLIP's does."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = fast_tokenizer({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    eos_id = tokenizer.convert_tokens_to_ids("</s>")
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    tokenizer.model_max_length = _TEXT_POSITIONS
    return tokenizer


def build_blip2_itm(path: Path) -> None:
    """``Blip2ForImageTextRetrieval`` (Q-Former ITC and ITM heads) with ``Blip2Processor``."""
    from transformers import (
        Blip2Config,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
    )

    tokenizer = _bert_like_tokenizer()
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        num_query_tokens=_NUM_QUERY_TOKENS,
    )
    config = Blip2Config(
        # BLIP-2's vision config initialises weights with a std of 1e-10 (trained weights
        # replace them); random tiny weights that small would make every image look the same.
        vision_config=Blip2VisionConfig(**VISION_SIZES, initializer_range=0.02),
        qformer_config=Blip2QFormerConfig(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            encoder_hidden_size=HIDDEN,
            vocab_size=len(tokenizer),
            max_position_embeddings=_TEXT_POSITIONS,
            pad_token_id=tokenizer.pad_token_id,
            use_qformer_text_input=True,
        ),
        num_query_tokens=_NUM_QUERY_TOKENS,
        image_text_hidden_size=_IMAGE_TEXT_DIM,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    Blip2ForImageTextRetrieval(config).save_pretrained(path)
    processor.save_pretrained(path)


def build_siglip(path: Path) -> None:
    """``SiglipModel`` (image and text towers, pooled, in one space) with ``SiglipProcessor``."""
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTextConfig,
        SiglipVisionConfig,
    )

    tokenizer = _siglip_tokenizer()
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = SiglipConfig(
        text_config=SiglipTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=_TEXT_POSITIONS,
            projection_size=_IMAGE_TEXT_DIM,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=SiglipVisionConfig(**{**VISION_SIZES, "hidden_size": _IMAGE_TEXT_DIM}),
    )
    SiglipModel(config).save_pretrained(path)
    processor.save_pretrained(path)
