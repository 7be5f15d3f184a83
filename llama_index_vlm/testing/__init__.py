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
(:mod:`~llama_index_vlm.testing.paligemma`: PaliGemma and ColPali, :mod:`.qwen2_vl`: ColQwen2,
:mod:`.llava`: LLaVA and LLaVA-NeXT, :mod:`.blip2`: BLIP-2, :mod:`.image_text`: BLIP-2's
image-text retrieval model and SigLIP) from the shared :mod:`.parts`.

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
from llama_index_vlm.testing.image_text import build_blip2_itm, build_siglip
from llama_index_vlm.testing.llava import build_llava, build_llava_next
from llama_index_vlm.testing.paligemma import build_colpali, build_paligemma
from llama_index_vlm.testing.qwen2_vl import build_colqwen2

__all__ = ["TINY_CHECKPOINT_KINDS", "is_tiny_checkpoint", "make_tiny_checkpoint"]

# Bumped whenever what a kind builds changes, so a cached checkpoint of an old recipe is rebuilt.
_RECIPE_VERSION = 2
_MARKER = "llama_index_vlm_tiny.json"

_BUILDERS: dict[str, Callable[[Path], None]] = {
    "colpali": build_colpali,
    "colqwen2": build_colqwen2,
    "llava": build_llava,
    "llava_next": build_llava_next,
    "paligemma": build_paligemma,
    "blip2": build_blip2,
    "blip2_itm": build_blip2_itm,
    "siglip": build_siglip,
}

#: The kinds :func:`make_tiny_checkpoint` builds.
TINY_CHECKPOINT_KINDS: tuple[str, ...] = tuple(_BUILDERS)


def make_tiny_checkpoint(kind: str, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build (or reuse) a tiny random checkpoint of a real architecture at ``path``.

    Args:
        kind: one of :data:`TINY_CHECKPOINT_KINDS`: ``"colpali"`` (``ColPaliForRetrieval`` over a
            PaliGemma backbone), ``"colqwen2"`` (``ColQwen2ForRetrieval``), ``"llava"``,
            ``"llava_next"``, ``"paligemma"``, ``"blip2"``, ``"blip2_itm"``
            (``Blip2ForImageTextRetrieval``, for image search) or ``"siglip"`` (``SiglipModel``).
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
