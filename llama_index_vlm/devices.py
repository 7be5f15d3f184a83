"""Choosing the torch device, dtype and attention kernel for a model.

``"auto"`` means: cuda, then mps, then cpu; bfloat16 on cuda (half the memory of float32, and
the dtype the released checkpoints were trained in), float32 elsewhere (CPUs and MPS run it
fastest and exactly); FlashAttention-2 on cuda in half precision when the ``flash-attn``
package is installed and the model supports it, else PyTorch's scaled-dot-product attention
(``"sdpa"``) where the model supports it.
"""

from __future__ import annotations

from typing import Any

import torch

from llama_index_vlm.errors import UnsupportedDeviceError

#: The values of ``attn_implementation``: transformers' names, and "auto".
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "sdpa", "flash_attention_2", "eager")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to cuda, then mps, then cpu; pass any other device through."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Resolve ``"auto"`` to bfloat16 on cuda and float32 elsewhere; accept dtype names."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return resolved


def resolve_attn_implementation(
    requested: str, model_class: Any, device: torch.device, dtype: torch.dtype
) -> str | None:
    """The ``attn_implementation`` to load ``model_class`` with (None: transformers' default).

    Raises:
        UnsupportedDeviceError: FlashAttention-2 was asked for where it cannot run (no CUDA, not
            installed, float32, or a model without it).
    """
    from transformers.utils import is_flash_attn_2_available

    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, not {requested!r}"
        )
    half = dtype in (torch.bfloat16, torch.float16)
    flash_ready = device.type == "cuda" and half and is_flash_attn_2_available()
    supports_flash = bool(getattr(model_class, "_supports_flash_attn", False))
    if requested == "auto":
        if flash_ready and supports_flash:
            return "flash_attention_2"
        return "sdpa" if getattr(model_class, "_supports_sdpa", False) else None
    if requested == "flash_attention_2" and not (flash_ready and supports_flash):
        raise UnsupportedDeviceError(
            f"attn_implementation='flash_attention_2' needs a CUDA GPU, bfloat16 or float16, the "
            f"flash-attn package and a model that supports it (here: device {device}, {dtype}, "
            f"flash-attn {'installed' if is_flash_attn_2_available() else 'not installed'}, "
            f"{model_class.__name__} {'supports' if supports_flash else 'lacks'} it); use "
            "attn_implementation='sdpa'"
        )
    return requested
