"""Checking a checkpoint before trusting it: its config loads, and no weight is missing.

Shared by every model loader (the ColPali encoder, the answering VLM), so a bad path, an offline
hub id or a checkpoint with missing weights fails the same way everywhere, with a message that
says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llama_index_vlm.errors import InvalidCheckpointError, MissingWeightsError


def load_config(name_or_path: str, revision: str | None = None) -> Any:
    """Load a checkpoint's transformers config, or explain why it cannot be loaded.

    Raises:
        InvalidCheckpointError: the directory holds no config, the path is a file, or the hub id
            cannot be fetched (for example, offline).

    Example::

        config = load_config("llava-hf/llava-1.5-7b-hf")
        config.model_type  # "llava"
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as error:
        if os.path.isdir(name_or_path):
            hint = "the directory holds no config.json of a transformers checkpoint"
        elif os.path.exists(name_or_path):
            hint = "it is a file; pass the checkpoint's directory"
        else:
            hint = (
                "there is no local directory of that name, and it could not be fetched from the "
                "Hugging Face hub (offline?); download it where you have the hub, or pass a "
                "local directory holding the checkpoint"
            )
        raise InvalidCheckpointError(
            f"cannot load a checkpoint from {name_or_path!r}: {hint}"
        ) from error


def model_type(name_or_path: str, revision: str | None = None) -> str:
    """The ``model_type`` in a checkpoint's config (``"colpali"``, ``"llava"``, ``"blip-2"``...).

    Loaders pick the model class from this, never from the checkpoint's name, so a renamed or
    fine-tuned checkpoint still loads with the right class.

    Example::

        model_type("vidore/colpali-v1.3-hf")  # "colpali"
    """
    return str(getattr(load_config(name_or_path, revision), "model_type", ""))


def raise_if_missing_weights(
    name_or_path: str, loading_info: Mapping[str, Any], consequence: str, advice: str
) -> None:
    """Refuse a checkpoint that lacks weights transformers would initialise at random.

    Args:
        name_or_path: the checkpoint, for the message.
        loading_info: what ``from_pretrained(..., output_loading_info=True)`` returned.
        consequence: what random weights would do to the user (a clause for the message).
        advice: what to load instead (a sentence for the message).

    Raises:
        MissingWeightsError: ``loading_info`` lists missing keys.

    Example::

        model, info = LlavaForConditionalGeneration.from_pretrained(path, output_loading_info=True)
        raise_if_missing_weights(path, info, "answers would be noise", "Use a full checkpoint.")
    """
    missing = sorted(loading_info.get("missing_keys") or [])
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise MissingWeightsError(
        f"{name_or_path!r} lacks {len(missing)} weight(s) that transformers would "
        f"initialise at random ({shown}); {consequence}. {advice}",
        missing,
    )
