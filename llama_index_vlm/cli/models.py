"""Loading the models a command runs, with the command line's own hints when that fails.

torch and transformers are imported inside these functions: only the commands that run a
model (``index``, ``search``, ``ask``, ``maps``) pay for them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from llama_index_vlm.errors import (
    InvalidCheckpointError,
    ModelMismatchError,
    UnsupportedDeviceError,
    UsageError,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.store import LanceDBPageStore
    from llama_index_vlm.vlm import HuggingFaceVLM


def load_encoder(model: str | None, store: LanceDBPageStore, device: str) -> ColPaliEncoder:
    """Load the retriever model and check it matches the vectors already in ``store``.

    Without ``model``, the model recorded in the store's fingerprint is used (so querying needs
    no --model), or the default checkpoint for a new store.
    """
    from llama_index_vlm.encoder import DEFAULT_ENCODER, ColPaliEncoder

    check_device(device)
    recorded = (store.fingerprint or {}).get("model")
    name = model or recorded or DEFAULT_ENCODER
    try:
        encoder = ColPaliEncoder.from_pretrained(
            _resolve_local(name), device=device, show_progress=False
        )
    except InvalidCheckpointError as error:
        if model is None and recorded:
            raise InvalidCheckpointError(
                f"the index's model: {error} (the index was built with {recorded!r}; pass "
                "--model with that checkpoint's hub id or a local copy of it)"
            ) from error
        raise InvalidCheckpointError(f"--model: {error}") from error
    _check_matches_store(encoder, store, model_given=model is not None)
    return encoder


def _check_matches_store(
    encoder: ColPaliEncoder, store: LanceDBPageStore, *, model_given: bool
) -> None:
    try:
        store.check_fingerprint(encoder.fingerprint, encoder.embedding_dim)
    except ModelMismatchError as error:
        # The library's message spells out both fingerprints; people need the two models.
        stored = store.fingerprint or {}
        raise ModelMismatchError(
            f"the index at {store.uri} was built with {_describe_model(stored)}, not "
            f"{_describe_model(encoder.fingerprint)}: their vectors cannot be compared; "
            + ("leave out --model to use the index's own model, or " if model_given else "")
            + "index with the new model into another --store"
        ) from error


def load_vlm(
    name: str, device: str, max_new_tokens: int, quantization: str | None = None
) -> HuggingFaceVLM:
    """Load the answering model, with the CLI's hint when it cannot be loaded."""
    from llama_index_vlm.vlm import HuggingFaceVLM

    check_device(device)
    try:
        return HuggingFaceVLM.from_pretrained(
            _resolve_local(name),
            device=device,
            max_new_tokens=max_new_tokens,
            quantization=quantization,
        )
    except InvalidCheckpointError as error:
        raise InvalidCheckpointError(f"--vlm: {error}") from error
    except (UnsupportedDeviceError, ImportError) as error:  # the device or a library lacks it
        raise UsageError(f"--quantization {quantization}: {error}") from error


def check_device(device: str) -> None:
    """Refuse a device name torch does not know, or one this machine lacks."""
    if device == "auto":
        return
    import torch

    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(
            f"--device {device!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")


def _describe_model(fingerprint: dict[str, Any]) -> str:
    name = fingerprint.get("model") or "an unknown model"
    details = [
        str(fingerprint[key]) for key in ("model_class", "weights_digest") if key in fingerprint
    ]
    return f"{name} ({', '.join(details)})" if details else str(name)


def _resolve_local(name: str) -> str:
    # A local directory is recorded by its absolute path in the store's fingerprint, so later
    # commands find it again from any working directory.
    return os.path.abspath(name) if os.path.isdir(name) else name
