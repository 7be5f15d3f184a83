"""Quantised loading of answer models: less memory for the weights, at a small cost in quality.

- ``"4bit"``: bitsandbytes NF4 with double quantisation, computing in bfloat16 (a 7B model in
  about 5 GB of GPU memory). CUDA only.
- ``"8bit"``: bitsandbytes LLM.int8() (about 8 GB for 7B). CUDA only.
- ``"int8"``: torchao int8 weight-only quantisation: the weights stored in int8, dequantised on
  the fly; runs on CPUs and CUDA GPUs (half the memory of bfloat16 weights, a quarter of float32).

bitsandbytes is offered on CUDA GPUs only, which it is made for (its CPU backend needs extra
kernels for 4-bit matrix products); on a CPU, ``"int8"`` and a bfloat16 ``dtype`` are the
options, measured side by side by ``benchmarks/generate.py --full --models smolvlm-256m
--allow-cpu`` (benchmarks/RESULTS.md). Retrievers are not quantised: their embeddings define
the index.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from llama_index_vlm.errors import UnsupportedDeviceError

#: The values of ``quantization``.
QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit", "int8")

_BITSANDBYTES = ("4bit", "8bit")


def quantization_config(name: str, device: torch.device) -> Any:
    """transformers' ``quantization_config`` for quantisation ``name`` on ``device``.

    Raises:
        ValueError: ``name`` is not one of :data:`QUANTIZATIONS`.
        UnsupportedDeviceError: the device cannot run it (bitsandbytes off CUDA, torchao on MPS).
        ImportError: a library it needs (bitsandbytes or torchao, and accelerate) is not
            installed; the message says what to install.

    Example::

        config = quantization_config("4bit", torch.device("cuda"))
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, quantization_config=config, device_map={"": "cuda"})
    """
    if name not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS} or None, not {name!r}")
    if name in _BITSANDBYTES:
        return _bitsandbytes(name, device)
    return _torchao_int8(device)


def _bitsandbytes(name: str, device: torch.device) -> Any:
    if device.type != "cuda":
        raise UnsupportedDeviceError(
            f"quantization={name!r} (bitsandbytes) needs a CUDA GPU, and the model loads on "
            f"{device}; on a CPU use quantization='int8' (torchao int8 weights) or "
            "dtype='bfloat16'"
        )
    _require(name, "bitsandbytes", "accelerate")
    from transformers import BitsAndBytesConfig

    if name == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _torchao_int8(device: torch.device) -> Any:
    if device.type not in ("cpu", "cuda"):
        raise UnsupportedDeviceError(
            f"quantization='int8' (torchao) runs on CPUs and CUDA GPUs, not on {device}; "
            "use dtype='float16' there"
        )
    _require("int8", "torchao", "accelerate")
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def _require(name: str, *packages: str) -> None:
    # accelerate places quantised weights where they run (the device_map they load with).
    missing = [package for package in packages if importlib.util.find_spec(package) is None]
    if missing:
        raise ImportError(
            f"quantization={name!r} needs the {' and '.join(missing)} package"
            f"{'s' if len(missing) > 1 else ''}: pip install 'llama-index-vlm[quantization]'"
        )
