"""Loading the models a command runs: checked first, placed on a device and dtype that fit, and
loaded quietly, with the command line's own hints when that fails.

A command names its checkpoints (:func:`encoder_name`, :func:`vlm_name`: checked without
loading anything), places them together (:func:`place`: the device, the dtype, and whether they
fit in its free memory), then loads them (:func:`load_encoder`, :func:`load_vlm`). torch and
transformers are imported only by :func:`place` and the loaders: only the commands that run a
model pay for them, and only once their inputs are known to be good.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.memory import model_size, require_memory
from llama_index_vlm.cli.output import escaped
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

# "org/name" as the hub spells repository ids; anything else that is not a directory is a typo.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Placement:
    """Where the models of one command run: a torch device name and a dtype name."""

    device: str
    dtype: str


# ------------------------------------------------------------------ naming (nothing loaded)


def encoder_name(model: str | None, store: LanceDBPageStore, adapter: str | None = None) -> str:
    """The retriever checkpoint a command uses, checked: ``--model``, else the one recorded in
    the store, else the base ``adapter`` was trained on, else the default (a new store).
    """
    from llama_index_vlm.cli.parser import DEFAULT_ENCODER

    recorded = (store.fingerprint or {}).get("model")
    name = model or recorded or _adapter_base(adapter) or DEFAULT_ENCODER
    if model is None and recorded:
        check_checkpoint(name, "the index's model", f" (pass --model with a copy of {name!r})")
    else:
        check_checkpoint(name, "--model")
    return resolve_local(name)


def retriever_adapter(
    model: str | None, adapter: str | None, store: LanceDBPageStore
) -> str | None:
    """The LoRA adapter on the retriever: ``--adapter``, else the store's own when the store's
    own model is used (no ``--model``), else none.
    """
    if adapter is not None or model is not None:
        return adapter
    return (store.fingerprint or {}).get("adapter")


def _adapter_base(adapter: str | None) -> str | None:
    """The base checkpoint an adapter directory says it was trained on (None if unknown).

    Raises:
        InvalidCheckpointError: ``adapter`` is not an adapter directory (named as --adapter).
    """
    if adapter is None:
        return None
    from llama_index_vlm.adapters import read_adapter

    try:
        _, config = read_adapter(adapter)
    except InvalidCheckpointError as error:
        raise InvalidCheckpointError(f"--adapter: {error}") from error
    return config.get("base_model_name_or_path")


def vlm_name(vlm: str) -> str:
    """The answering checkpoint ``--vlm`` names, checked."""
    check_checkpoint(vlm, "--vlm")
    return resolve_local(vlm)


def check_checkpoint(name: str, option: str, hint: str = "") -> None:
    """Refuse, before anything is loaded, a checkpoint that cannot be there: a file, a directory
    without a config, a path that does not exist, or a hub id not downloaded while offline.

    Raises:
        InvalidCheckpointError: saying which, and what to pass instead.
    """
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise InvalidCheckpointError(
                f"{option}: cannot load a checkpoint from {name!r}: the directory holds no "
                f"config.json of a transformers checkpoint{hint}"
            )
        return
    if os.path.exists(name):
        raise InvalidCheckpointError(
            f"{option}: {name!r} is a file; pass the checkpoint's directory{hint}"
        )
    if not _HUB_ID.fullmatch(name):
        raise InvalidCheckpointError(
            f"{option}: there is no directory {name!r}, and it is not a hub id (org/name); "
            f"pass a checkpoint directory or a hub id{hint}"
        )
    if _offline() and not _downloaded(name):
        raise InvalidCheckpointError(
            f"{option}: cannot load a checkpoint from {name!r}: there is no local directory of "
            "that name, and it could not be fetched from the Hugging Face hub (HF_HUB_OFFLINE "
            f"is set); download it first (`hf download {name}`) or pass a local directory "
            f"holding the checkpoint{hint}"
        )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _downloaded(repo_id: str) -> bool:
    from llama_index_vlm.cli.memory import checkpoint_dir

    return checkpoint_dir(repo_id) is not None


def resolve_local(name: str) -> str:
    """A local directory as its absolute path; a hub id as it is."""
    # A local directory is recorded by its absolute path in the store's fingerprint, so later
    # commands find it again from any working directory.
    return os.path.abspath(name) if os.path.isdir(name) else name


# ------------------------------------------------------------------ placing (torch, no model)


def place(
    names: list[str], device: str, dtype: str, *, quantized: dict[str, str] | None = None
) -> Placement:
    """The device and dtype for loading the checkpoints ``names`` together, once they are known
    to fit in that device's free memory.

    ``quantized`` maps a checkpoint loaded with ``--quantization`` to that scheme, counted at its
    size. ``dtype="auto"`` is bfloat16 on a GPU and on a CPU (half float32's memory: a float32 7B
    model alone needs 28 GB), float16 on Apple's mps.

    Raises:
        UsageError: an unknown or absent device, or models that need more memory than is free.
    """
    check_device(device)
    from llama_index_vlm.devices import resolve_device

    resolved = resolve_device(device)
    if dtype == "auto":
        dtype = "float16" if resolved.type == "mps" else "bfloat16"
    quantized = quantized or {}
    require_memory([model_size(name, quantized.get(name, dtype)) for name in names], str(resolved))
    return Placement(str(resolved), dtype)


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


# ------------------------------------------------------------------ loading


def load_encoder(
    name: str,
    store: LanceDBPageStore,
    placement: Placement,
    *,
    model_given: bool,
    verbose: bool = False,
    adapter: str | None = None,
) -> ColPaliEncoder:
    """Load the retriever ``name`` (from :func:`encoder_name`), with its LoRA ``adapter`` (from
    :func:`retriever_adapter`), and check it matches the vectors already in ``store``.
    """
    from llama_index_vlm.encoder import ColPaliEncoder

    recorded = (store.fingerprint or {}).get("model")
    try:
        with quiet_transformers(verbose):
            encoder = ColPaliEncoder.from_pretrained(
                name,
                device=placement.device,
                dtype=placement.dtype,
                show_progress=False,
                adapter=adapter,
            )
    except InvalidCheckpointError as error:
        if not model_given and recorded:
            raise InvalidCheckpointError(
                f"the index's model: {error} (the index was built with {recorded!r}; pass "
                "--model with that checkpoint's hub id or a local copy of it)"
            ) from error
        raise InvalidCheckpointError(f"--model: {error}") from error
    _check_matches_store(encoder, store, model_given=model_given)
    return encoder


def load_vlm(
    name: str,
    placement: Placement,
    max_new_tokens: int,
    *,
    quantization: str | None = None,
    verbose: bool = False,
    adapter: str | None = None,
) -> HuggingFaceVLM:
    """Load the answering model ``name`` (from :func:`vlm_name`), with a LoRA ``adapter``, and
    with the CLI's hint when it cannot be loaded.

    Raises:
        UsageError: ``quantization`` that this device or the installed libraries cannot run.
    """
    from llama_index_vlm.vlm import HuggingFaceVLM

    try:
        with quiet_transformers(verbose):
            return HuggingFaceVLM.from_pretrained(
                name,
                device=placement.device,
                dtype=placement.dtype,
                max_new_tokens=max_new_tokens,
                adapter=adapter,
                quantization=quantization,
            )
    except InvalidCheckpointError as error:
        raise InvalidCheckpointError(f"--vlm: {error}") from error
    except (UnsupportedDeviceError, ImportError) as error:  # the device or a library lacks it
        raise UsageError(f"--quantization {quantization}: {error}") from error


def note_tiny_checkpoints(names: list[str]) -> None:
    """Say once, on stderr, that answers or maps of tiny test checkpoints mean nothing."""
    from llama_index_vlm.testing import is_tiny_checkpoint

    tiny = [name for name in dict.fromkeys(names) if is_tiny_checkpoint(name)]
    if tiny:
        what = "is a tiny test checkpoint" if len(tiny) == 1 else "are tiny test checkpoints"
        their = "its" if len(tiny) == 1 else "their"
        print(
            f"note: {', '.join(escaped(name) for name in tiny)} {what} with random weights "
            f"(llama_index_vlm.testing): {their} answers, rankings and maps are meaningless",
            file=sys.stderr,
        )


@contextmanager
def quiet_transformers(verbose: bool) -> Iterator[None]:
    """transformers' own progress bars (loading weights) and warnings off, unless ``verbose``.

    The hub's download bars stay: a first download of gigabytes needs one.
    """
    if verbose:
        yield
        return
    from transformers.utils import logging as transformers_logging

    previous_hook = transformers_logging.set_tqdm_hook(_disabled_bar)
    previous_level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_tqdm_hook(previous_hook)
        transformers_logging.set_verbosity(previous_level)


def _disabled_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return factory(*args, **{**kwargs, "disable": True})


def _check_matches_store(
    encoder: ColPaliEncoder, store: LanceDBPageStore, *, model_given: bool
) -> None:
    try:
        store.check_fingerprint(encoder.fingerprint, encoder.embedding_dim)
    except ModelMismatchError as error:
        # The library's message spells out both fingerprints; people need the two models.
        stored = store.fingerprint or {}
        raise ModelMismatchError(
            f"the index at {escaped(store.uri)} was built with {_describe_model(stored)}, not "
            f"{_describe_model(encoder.fingerprint)}: their vectors cannot be compared; "
            + ("leave out --model to use the index's own model, or " if model_given else "")
            + "index with the new model into another --store"
        ) from error


def _describe_model(fingerprint: dict[str, Any]) -> str:
    name = escaped(fingerprint.get("model") or "an unknown model")
    details = [
        str(fingerprint[key])
        for key in ("model_class", "weights_digest", "adapter")
        if fingerprint.get(key) is not None
    ]
    return f"{name} ({', '.join(details)})" if details else str(name)
