"""LoRA adapters on a loaded checkpoint: attach (or merge) one, and say which one it is.

An adapter directory is what :mod:`llama_index_vlm.finetune` (or any peft training) saves:
``adapter_config.json`` and ``adapter_model.safetensors``. :func:`attach_adapter` puts it on
the base model with peft's ``PeftModel.from_pretrained``, merged into the weights on request
(faster inference, the same outputs). :class:`AdapterInfo` identifies it by a digest of its
weights, which goes into an encoder's fingerprint: vectors of an adapted model never share an
index with the base model's, nor with another adapter's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index_vlm.errors import InvalidCheckpointError, UsageError

ADAPTER_CONFIG = "adapter_config.json"
#: The weight files peft writes, preferred first.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AdapterInfo:
    """Which adapter a model carries.

    Attributes:
        path: the adapter directory, absolute.
        digest: the first 16 hex digits of the sha256 of its weights file: the same adapter
            copied elsewhere has the same digest.
        merged: whether it was merged into the base weights.
        base: the base checkpoint it was trained on, as peft recorded it (None if not).
    """

    path: str
    digest: str
    merged: bool
    base: str | None

    def fingerprint_fields(self) -> dict[str, str]:
        """The fields an encoder's fingerprint records for it (``adapter_digest`` decides)."""
        return {"adapter": self.path, "adapter_digest": self.digest}


def read_adapter(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """An adapter directory and its ``adapter_config.json``, checked.

    Raises:
        InvalidCheckpointError: not a directory, or no adapter config or weights in it.
    """
    directory = Path(path).expanduser().resolve()
    config_path = directory / ADAPTER_CONFIG
    if not config_path.is_file():
        raise InvalidCheckpointError(
            f"{os.fspath(path)!r} is not a LoRA adapter directory (it has no {ADAPTER_CONFIG}); "
            "pass the folder `llama-index-vlm finetune ... --out` wrote"
        )
    if weights_file(directory) is None:
        raise InvalidCheckpointError(
            f"the adapter {os.fspath(path)!r} has no weights ({' or '.join(ADAPTER_WEIGHTS)})"
        )
    return directory, json.loads(config_path.read_text(encoding="utf-8"))


def weights_file(directory: Path) -> Path | None:
    """The adapter's weights file, or None."""
    return next((directory / n for n in ADAPTER_WEIGHTS if (directory / n).is_file()), None)


def adapter_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the sha256 of an adapter's weights file."""
    directory, _ = read_adapter(path)
    digest = hashlib.sha256()
    with weights_file(directory).open("rb") as weights:
        while chunk := weights.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def attach_adapter(
    model: Any, path: str | os.PathLike[str], merge: bool = False
) -> tuple[Any, AdapterInfo]:
    """``model`` with the LoRA adapter at ``path`` (merged into its weights if ``merge``).

    Returns:
        The adapted model in eval mode (a peft ``PeftModel``, or the base class when merged)
        and what identifies the adapter.

    Raises:
        InvalidCheckpointError: not an adapter directory, or an adapter of another architecture
            (its layers are not in ``model``, or their shapes differ).
        UsageError: peft is not installed.
    """
    directory, config = read_adapter(path)
    _check_base_class(directory, config, model)
    try:
        from peft import PeftModel
    except ImportError:
        raise UsageError(
            "loading an adapter needs peft: pip install 'llama-index-vlm[finetune]'"
        ) from None
    try:
        adapted = PeftModel.from_pretrained(model, str(directory))
    except (ValueError, RuntimeError, KeyError) as error:
        trained_on = config.get("base_model_name_or_path")
        raise InvalidCheckpointError(
            f"the adapter {str(directory)!r} (trained on {trained_on!r}) does not fit this "
            f"{type(model).__name__}: {error}"
        ) from error
    if merge:
        adapted = adapted.merge_and_unload()
    info = AdapterInfo(
        path=str(directory),
        digest=adapter_digest(directory),
        merged=merge,
        base=config.get("base_model_name_or_path"),
    )
    return adapted.eval(), info


def _check_base_class(directory: Path, config: dict[str, Any], model: Any) -> None:
    """Refuse an adapter peft recorded as trained on another model class: layers of the same
    names and shapes (small models of two families can share them) would load silently.
    """
    trained_on = (config.get("auto_mapping") or {}).get("base_model_class")
    if trained_on is not None and trained_on != type(model).__name__:
        raise InvalidCheckpointError(
            f"the adapter {str(directory)!r} was trained on a {trained_on} "
            f"({config.get('base_model_name_or_path')!r}); it does not fit this "
            f"{type(model).__name__}: load it on the checkpoint it was trained on"
        )
