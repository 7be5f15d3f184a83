"""Tiny, randomly initialised checkpoints of the real architectures, for offline tests.

Real ColPali and LLaVA weights are gigabytes and live on the Hugging Face hub. Tests of
llama-index-vlm, and of applications built on it, instead use checkpoints made here: the same
model and processor classes as the real checkpoints (``ColPaliForRetrieval``,
``LlavaForConditionalGeneration``, ...), a byte-level BPE tokenizer trained locally with the
``tokenizers`` library (with each processor's special tokens and, where the real checkpoint has
one, its chat template), random weights, saved with ``save_pretrained``. They load back through
the same public ``from_pretrained`` path as a hub checkpoint, so a test exercises the real code.

The answers and rankings of such models are meaningless; their shapes, prompts, token counts
and code paths are the real ones.

Example::

    from llama_index_vlm import ColPaliEncoder
    from llama_index_vlm.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint("colpali", tmp_path / "colpali")
    encoder = ColPaliEncoder.from_pretrained(path)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["TINY_CHECKPOINT_KINDS", "make_tiny_checkpoint"]

# Bumped whenever what a kind builds changes, so a cached checkpoint of an old recipe is rebuilt.
_RECIPE_VERSION = 2
_MARKER = "llama_index_vlm_tiny.json"

# Small enough that all kinds build in seconds on a CPU; big enough that every code path of the
# real architecture runs (attention heads, several patches, a projector, a language head).
_HIDDEN = 32
_IMAGE_SIZE = 32
_PATCH = 8
_EMBEDDING_DIM = 128  # the real ColPali/ColQwen2 embedding dimension, so stores look real

_CORPUS = """
The annual report shows revenue, profit and cash flow for the fiscal year 2023.
Figure 1 compares quarterly sales by region; table 2 lists operating expenses.
The manual explains installation, safety instructions, maintenance and troubleshooting.
Slides summarise the product roadmap, the market share and the customer survey.
This form asks for the name, address, date of birth, signature and account number.
What was the total revenue? Which page describes the warranty? How many units were sold?
Question: Answer: Describe the image. caption en answer en detect segment
""".strip()

_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + content['text'] }}{% endfor %}{{ '</s>' }}"
    "{% endif %}{% endfor %}"
)


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 600):
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


def _fast_tokenizer(special_tokens: dict[str, str], extra_special: list[str] = ()):
    """Wrap a trained tokenizer in transformers' tokenizer class, with named special tokens."""
    from transformers import PreTrainedTokenizerFast

    ordered = list(dict.fromkeys([*special_tokens.values(), *extra_special]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(ordered),
        **special_tokens,
        extra_special_tokens=list(extra_special) or None,
    )
    return tokenizer


def _siglip_image_processor():
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        image_seq_length=(_IMAGE_SIZE // _PATCH) ** 2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _gemma_tokenizer():
    return _fast_tokenizer(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        ["<image>"],
    )


def _paligemma_config(vocab_size: int, image_token_id: int, pad_token_id: int):
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    return PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=_HIDDEN,
            intermediate_size=2 * _HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=_IMAGE_SIZE,
            patch_size=_PATCH,
            projection_dim=_HIDDEN,
        ),
        text_config=GemmaConfig(
            vocab_size=vocab_size,
            hidden_size=_HIDDEN,
            intermediate_size=2 * _HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=_HIDDEN // 2,
            max_position_embeddings=2048,
            pad_token_id=pad_token_id,
        ),
        image_token_id=image_token_id,
        projection_dim=_HIDDEN,
        hidden_size=_HIDDEN,
    )


def _paligemma_processor():
    from transformers import PaliGemmaProcessor

    return PaliGemmaProcessor(
        image_processor=_siglip_image_processor(), tokenizer=_gemma_tokenizer()
    )


def _build_colpali(path: Path) -> None:
    from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor

    processor = ColPaliProcessor(
        image_processor=_siglip_image_processor(), tokenizer=_gemma_tokenizer()
    )
    tokenizer = processor.tokenizer
    vlm_config = _paligemma_config(len(tokenizer), processor.image_token_id, tokenizer.pad_token_id)
    model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm_config, embedding_dim=_EMBEDDING_DIM))
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _build_paligemma(path: Path) -> None:
    from transformers import PaliGemmaForConditionalGeneration

    processor = _paligemma_processor()
    tokenizer = processor.tokenizer
    config = _paligemma_config(len(tokenizer), processor.image_token_id, tokenizer.pad_token_id)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)


_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _build_colqwen2(path: Path) -> None:
    from transformers import (
        ColQwen2Config,
        ColQwen2ForRetrieval,
        ColQwen2Processor,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
    )

    tokenizer = _fast_tokenizer(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, _QWEN_SPECIAL
    )
    merge = 2
    factor = _PATCH * merge
    image_processor = Qwen2VLImageProcessor(
        patch_size=_PATCH,
        merge_size=merge,
        temporal_patch_size=2,
        # Real ColQwen2 caps pages at 768 merged patches; the tiny one at 4x4 merged patches.
        min_pixels=(2 * factor) ** 2,
        max_pixels=(4 * factor) ** 2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
    )
    processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL}
    head_dim = _HIDDEN // 2
    vlm_config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": _HIDDEN,
            "intermediate_size": 2 * _HIDDEN,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
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
            "embed_dim": _HIDDEN,
            "hidden_size": _HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": _PATCH,
            "spatial_merge_size": merge,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = ColQwen2ForRetrieval(
        ColQwen2Config(vlm_config=vlm_config, embedding_dim=_EMBEDDING_DIM)
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _llama_tokenizer():
    return _fast_tokenizer(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        ["<image>"],
    )


def _llama_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _clip_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH,
        projection_dim=_HIDDEN,
    )


# What LLaVA-1.5 and LLaVA-NeXT processors and configs share: CLIP patches without the CLS
# token ("default" strategy) from the second-to-last vision layer, one "<image>" placeholder.
_LLAVA_PROCESSOR_KWARGS = {
    "patch_size": _PATCH,
    "vision_feature_select_strategy": "default",
    "image_token": "<image>",
    "num_additional_image_tokens": 1,
}


def _llava_config_kwargs(tokenizer) -> dict:
    return {
        "vision_config": _clip_vision_config(),
        "text_config": _llama_config(tokenizer),
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
    }


def _save_generator(model, tokenizer, processor, path: Path) -> None:
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _build_llava(path: Path) -> None:
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _llama_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE}, crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_LLAVA_CHAT_TEMPLATE,
        **_LLAVA_PROCESSOR_KWARGS,
    )
    config = LlavaConfig(**_llava_config_kwargs(tokenizer))
    _save_generator(LlavaForConditionalGeneration(config), tokenizer, processor, path)


def _build_llava_next(path: Path) -> None:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = _llama_tokenizer()
    pinpoints = [
        [_IMAGE_SIZE, 2 * _IMAGE_SIZE],
        [2 * _IMAGE_SIZE, _IMAGE_SIZE],
        [2 * _IMAGE_SIZE] * 2,
    ]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_LLAVA_NEXT_CHAT_TEMPLATE,
        **_LLAVA_PROCESSOR_KWARGS,
    )
    config = LlavaNextConfig(image_grid_pinpoints=pinpoints, **_llava_config_kwargs(tokenizer))
    _save_generator(LlavaNextForConditionalGeneration(config), tokenizer, processor, path)


def _build_blip2(path: Path) -> None:
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
    tokenizer = _fast_tokenizer(
        {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"},
        ["<image>"],
    )
    num_query_tokens = 4
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}),
        tokenizer=tokenizer,
        num_query_tokens=num_query_tokens,
    )
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=_HIDDEN,
            intermediate_size=2 * _HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=_IMAGE_SIZE,
            patch_size=_PATCH,
        ),
        qformer_config=Blip2QFormerConfig(
            hidden_size=_HIDDEN,
            intermediate_size=2 * _HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            encoder_hidden_size=_HIDDEN,
            vocab_size=len(tokenizer),
        ),
        text_config=OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=_HIDDEN,
            ffn_dim=2 * _HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            word_embed_proj_dim=_HIDDEN,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        num_query_tokens=num_query_tokens,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    _save_generator(Blip2ForConditionalGeneration(config), tokenizer, processor, path)


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "colpali": _build_colpali,
    "colqwen2": _build_colqwen2,
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "paligemma": _build_paligemma,
    "blip2": _build_blip2,
}

#: The kinds :func:`make_tiny_checkpoint` builds.
TINY_CHECKPOINT_KINDS: tuple[str, ...] = tuple(_BUILDERS)


def make_tiny_checkpoint(kind: str, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build (or reuse) a tiny random checkpoint of a real architecture at ``path``.

    Args:
        kind: one of :data:`TINY_CHECKPOINT_KINDS`: ``"colpali"`` (``ColPaliForRetrieval`` over a
            PaliGemma backbone), ``"colqwen2"`` (``ColQwen2ForRetrieval``), ``"llava"``,
            ``"llava_next"``, ``"paligemma"`` or ``"blip2"``.
        path: the directory to write. If it already holds a checkpoint of the same kind, seed
            and recipe (made earlier by this function), it is reused as it is, so a test suite
            can cache checkpoints across tests and runs.
        seed: the seed of the random weights; the same seed gives bit-identical weights.

    Returns:
        ``path`` as a :class:`~pathlib.Path`, ready for ``from_pretrained``.

    Raises:
        ValueError: ``kind`` is not one of the supported kinds.
    """
    if kind not in _BUILDERS:
        raise ValueError(
            f"unknown tiny checkpoint kind {kind!r}; choose one of {TINY_CHECKPOINT_KINDS}"
        )
    path = Path(path)
    marker = {"kind": kind, "seed": seed, "recipe": _RECIPE_VERSION}
    marker_path = path / _MARKER
    if marker_path.is_file() and json.loads(marker_path.read_text()) == marker:
        return path

    import torch

    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[kind](path)
    # Written last: a build interrupted half-way is never mistaken for a finished checkpoint.
    marker_path.write_text(json.dumps(marker))
    return path
