"""Will the models fit: a checkpoint's size in a dtype against the memory free to load it.

A model that does not fit does not fail cleanly: the machine swaps for minutes, or the kernel
kills the process without a word. So the commands add up what the checkpoints they are about to
load need, from their safetensors headers (no weights are read), and compare it with the free
memory of the device before loading anything.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llama_index_vlm.errors import UsageError

#: Bytes per element of the floating-point types a checkpoint's weights are cast to.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Bytes per weight of a quantised model (``--quantization``), counted for all its floats: the
#: layers left unquantised (embeddings, norms) make the true size a little larger.
QUANTIZED_BYTES = {"int8": 1, "8bit": 1, "4bit": 0.5}
#: Bytes per element of the types safetensors headers name.
_STORED_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_FLOATING = {"F64", "F32", "F16", "BF16"}
#: Room kept beyond the weights: activations, the processor, the Python heap.
_OVERHEAD = 1.1
_HEADROOM_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ModelSize:
    """What one model needs: its name for messages and its bytes in the dtype it loads in."""

    name: str
    dtype: str
    bytes: int


def checkpoint_dir(name_or_path: str) -> Path | None:
    """The local directory of a checkpoint: the path itself, or a hub id's cached snapshot.

    None when the hub id has not been downloaded (its size is then unknown here).
    """
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        config = try_to_load_from_cache(name_or_path, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(config).parent if isinstance(config, str) else None


def weights_bytes(directory: Path, dtype: str) -> int | None:
    """Bytes the weights under ``directory`` take once loaded as ``dtype``.

    Floating-point tensors count at ``dtype``'s size, others at their stored size; only the
    safetensors headers are read. A checkpoint without safetensors files counts its
    ``pytorch_model*.bin`` files' sizes as they are; None if it holds neither.
    """
    tensors = sorted(directory.glob("*.safetensors"))
    if tensors:
        float_bytes = DTYPE_BYTES.get(dtype) or QUANTIZED_BYTES[dtype]
        return int(sum(_safetensors_bytes(path, float_bytes) for path in tensors))
    pickled = sorted(directory.glob("pytorch_model*.bin"))
    return sum(path.stat().st_size for path in pickled) if pickled else None


def _safetensors_bytes(path: Path, float_bytes: float) -> float:
    with open(path, "rb") as file:
        (header_length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_length))
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        elements = 1
        for extent in tensor["shape"]:
            elements *= extent
        stored = tensor["dtype"]
        total += elements * (float_bytes if stored in _FLOATING else _STORED_BYTES.get(stored, 4))
    return total


def model_size(name: str, dtype: str) -> ModelSize | None:
    """What checkpoint ``name`` needs in ``dtype`` (or quantised: ``int8``, ``8bit``, ``4bit``);
    None when that cannot be told offline."""
    directory = checkpoint_dir(name)
    size = None if directory is None else weights_bytes(directory, dtype)
    return None if size is None else ModelSize(name, dtype, size)


def free_bytes(device: str) -> int | None:
    """Memory free for a model on ``device`` (a resolved torch device name): RAM for ``cpu``
    (without swap), the GPU's free memory for ``cuda``; None where it cannot be told.
    """
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return None


def require_memory(models: Iterable[ModelSize | None], device: str) -> None:
    """Refuse to load ``models`` together when they need more than ``device`` has free.

    Raises:
        UsageError: naming each model's need, what is free, and what to do instead.
    """
    known = [model for model in models if model is not None]
    available = free_bytes(device)
    if not known or available is None:
        return
    needed = int(sum(model.bytes for model in known) * _OVERHEAD) + _HEADROOM_BYTES
    if needed <= available:
        return
    listing = " and ".join(f"{model.name} in {model.dtype} ({gib(model.bytes)})" for model in known)
    advice = _advice(known, device)
    raise UsageError(
        f"loading {listing} needs about {gib(needed)} of memory on {device}, and "
        f"{gib(available)} is free; {advice}"
    )


def _advice(models: list[ModelSize], device: str) -> str:
    wider = [model for model in models if DTYPE_BYTES[model.dtype] > 2]
    options = []
    if wider:
        options.append("--dtype bfloat16 halves that")
    if device == "cpu":
        options.append("a GPU (--device cuda) holds it in its own memory")
    options.append("close other programs, or use a smaller model")
    return "; ".join(options)


def gib(size: int) -> str:
    """``size`` bytes in GB (GiB, one decimal), as memory is told.

    Example:
        >>> gib(14 * 2**30 + 2**29)
        '14.5 GB'
    """
    return f"{size / 2**30:.1f} GB"
