"""Device and dtype resolution: "auto" means cuda, then mps, then cpu; bfloat16 on cuda."""

from __future__ import annotations

import pytest
import torch

from llama_index_vlm.devices import resolve_device, resolve_dtype

CPU = torch.device("cpu")


def test_a_named_device_is_passed_through():
    assert resolve_device("cpu") == CPU


def test_auto_device_is_cuda_when_there_is_one_else_mps_or_cpu():
    expected = {"cuda"} if torch.cuda.is_available() else {"cpu", "mps"}
    assert resolve_device("auto").type in expected


def test_auto_dtype_is_float32_on_cpu():
    assert resolve_dtype("auto", CPU) is torch.float32


def test_auto_dtype_is_bfloat16_on_cuda():
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16


def test_a_dtype_name_is_the_torch_dtype():
    assert resolve_dtype("float16", CPU) is torch.float16


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float7", CPU)
