"""What every tiny checkpoint is built from: its sizes, a tokenizer trained offline, the save.

Small enough that all kinds build in seconds on a CPU; big enough that every code path of the
real architecture runs (attention heads, several patches, a projector, a language head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HIDDEN = 32
IMAGE_SIZE = 32
PATCH = 8
EMBEDDING_DIM = 128  # the real ColPali/ColQwen2 embedding dimension, so stores look real

#: The sizes of every tiny vision tower (SigLIP, CLIP, BLIP-2's ViT).
VISION_SIZES = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH,
}
#: The sizes of every tiny language model with grouped-query attention (Gemma, Llama, Qwen2).
LANGUAGE_MODEL_SIZES = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}

_CORPUS = """
The annual report shows revenue, profit and cash flow for the fiscal year 2023.
Figure 1 compares quarterly sales by region; table 2 lists operating expenses.
The manual explains installation, safety instructions, maintenance and troubleshooting.
Slides summarise the product roadmap, the market share and the customer survey.
This form asks for the name, address, date of birth, signature and account number.
What was the total revenue? Which page describes the warranty? How many units were sold?
Question: Answer: Describe the image. caption en answer en detect segment
""".strip()


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 600) -> Any:
    """A byte-level BPE tokenizer trained on a tiny corpus: it can encode any text, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return tokenizer


def fast_tokenizer(
    special_tokens: dict[str, str],
    extra_special: list[str] = (),
    named: dict[str, str] | None = None,
) -> Any:
    """A trained tokenizer in transformers' tokenizer class, with named special tokens.

    ``named`` gives extra special tokens attribute names (Gemma 3's ``tokenizer.boi_token``).
    """
    from transformers import PreTrainedTokenizerFast

    ordered = list(dict.fromkeys([*special_tokens.values(), *extra_special]))
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(ordered),
        **special_tokens,
        extra_special_tokens=named or list(extra_special) or None,
    )


def save_generator(model: Any, tokenizer: Any, processor: Any, path: Path) -> None:
    """Save a text generator with its tokenizer's bos, eos and pad ids in its generation
    config, as the real checkpoints have them.
    """
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
