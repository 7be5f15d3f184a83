"""Tiny, randomly initialised checkpoints of the real architectures, for offline tests.

Real ColPali and LLaVA weights are gigabytes and live on the Hugging Face hub. Tests of
llama-index-vlm, and of applications built on it, instead use checkpoints made here: the same
model and processor classes as the real checkpoints (``ColPaliForRetrieval``,
``LlavaForConditionalGeneration``, ...), a byte-level BPE tokenizer trained locally with the
``tokenizers`` library (with each processor's special tokens and, where the real checkpoint has
one, its chat template), random weights, saved with ``save_pretrained``. They load back through
the same public ``from_pretrained`` path as a hub checkpoint, so a test exercises the real code.

The answers and rankings of such models are meaningless; their shapes, prompts, token counts
and code paths are the real ones. One module per family group builds its kinds
(:mod:`~llama_index_vlm.testing.paligemma`: PaliGemma and ColPali; :mod:`.qwen_vl`: Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, ColQwen2 and ColQwen2.5; :mod:`.llava`: LLaVA, LLaVA-NeXT and
LLaVA-OneVision; :mod:`.idefics3`: SmolVLM, Idefics3 and ColModernVBERT; :mod:`.gemma3`:
Gemma 3; :mod:`.blip2`: BLIP-2; :mod:`.image_text`: BLIP-2's image-text
retrieval model and SigLIP) from the shared :mod:`.parts`, with the real checkpoints' chat
templates (:mod:`.chat_templates`). The processors of video-capable families are saved without
their video processor, which needs torchvision (see :mod:`llama_index_vlm.processors`).

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

from llama_index_vlm.testing.blip2 import build_blip2
from llama_index_vlm.testing.gemma3 import build_gemma3
from llama_index_vlm.testing.idefics3 import build_colmodernvbert, build_idefics3, build_smolvlm
from llama_index_vlm.testing.image_text import build_blip2_itm, build_siglip
from llama_index_vlm.testing.llava import build_llava, build_llava_next, build_llava_onevision
from llama_index_vlm.testing.paligemma import build_colpali, build_paligemma
from llama_index_vlm.testing.qwen_vl import (
    build_colqwen2,
    build_colqwen2_5,
    build_qwen2_5_vl,
    build_qwen2_vl,
    build_qwen3_vl,
)

__all__ = ["TINY_CHECKPOINT_KINDS", "is_tiny_checkpoint", "make_tiny_checkpoint"]

# Bumped whenever what a kind builds changes, so a cached checkpoint of an old recipe is rebuilt.
_RECIPE_VERSION = 3
_MARKER = "llama_index_vlm_tiny.json"

_BUILDERS: dict[str, Callable[[Path], None]] = {
    # Retrievers
    "colpali": build_colpali,
    "colqwen2": build_colqwen2,
    "colqwen2_5": build_colqwen2_5,
    "colmodernvbert": build_colmodernvbert,
    # Answerers
    "llava": build_llava,
    "llava_next": build_llava_next,
    "llava_onevision": build_llava_onevision,
    "paligemma": build_paligemma,
    "blip2": build_blip2,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "smolvlm": build_smolvlm,
    "idefics3": build_idefics3,
    "gemma3": build_gemma3,
    # Image search (single-vector image-text models)
    "blip2_itm": build_blip2_itm,
    "siglip": build_siglip,
}

#: The kinds :func:`make_tiny_checkpoint` builds.
TINY_CHECKPOINT_KINDS: tuple[str, ...] = tuple(_BUILDERS)


def make_tiny_checkpoint(kind: str, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build (or reuse) a tiny random checkpoint of a real architecture at ``path``.

    Args:
        kind: one of :data:`TINY_CHECKPOINT_KINDS`. Retrievers: ``"colpali"``
            (``ColPaliForRetrieval`` over a PaliGemma backbone), ``"colqwen2"`` and
            ``"colqwen2_5"`` (``ColQwen2ForRetrieval`` over Qwen2-VL, Qwen2.5-VL),
            ``"colmodernvbert"``. Answerers: ``"llava"``, ``"llava_next"``,
            ``"llava_onevision"``, ``"paligemma"``, ``"blip2"``, ``"qwen2_vl"``,
            ``"qwen2_5_vl"``, ``"qwen3_vl"``, ``"smolvlm"``, ``"idefics3"``, ``"gemma3"``.
            Image search: ``"blip2_itm"`` (``Blip2ForImageTextRetrieval``), ``"siglip"``
            (``SiglipModel``).
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


def is_tiny_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint :func:`make_tiny_checkpoint` built (random weights).

    Applications can say so instead of presenting a random model's output as an answer; the
    command line does.

    Example::

        is_tiny_checkpoint(make_tiny_checkpoint("llava", tmp_path / "llava"))  # True
        is_tiny_checkpoint("llava-hf/llava-1.5-7b-hf")                          # False
    """
    return (Path(path) / _MARKER).is_file()
