"""Loading answer models on a device: dtype, device_map, attention kernels and quantisation
(devices.py, quantization.py, checkpoints.load_model), each working or failing clearly."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import transformers

from llama_index_vlm.devices import resolve_attn_implementation
from llama_index_vlm.errors import UnsupportedDeviceError
from llama_index_vlm.quantization import quantization_config
from llama_index_vlm.vlm import HuggingFaceVLM

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
QWEN = transformers.Qwen2VLForConditionalGeneration


@pytest.fixture
def installed(monkeypatch):
    """``installed(*packages)``: make those packages look installed, and every other not."""

    def pretend(*packages: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name, *args, **kwargs):
            if name in ("bitsandbytes", "torchao", "accelerate"):
                return real("json") if name in packages else None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return pretend


# -- quantisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["4bit", "8bit"])
def test_bitsandbytes_off_cuda_is_refused_naming_what_works_on_a_cpu(name):
    with pytest.raises(UnsupportedDeviceError, match="needs a CUDA GPU.*quantization='int8'"):
        quantization_config(name, CPU)


def test_4bit_on_cuda_is_nf4_computing_in_bfloat16(installed):
    installed("bitsandbytes", "accelerate")
    config = quantization_config("4bit", CUDA)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype is torch.bfloat16


def test_8bit_on_cuda_is_llm_int8(installed):
    installed("bitsandbytes", "accelerate")
    assert quantization_config("8bit", CUDA).load_in_8bit


def test_a_missing_library_names_the_extra_to_install(installed):
    installed()
    with pytest.raises(ImportError, match=r"llama-index-vlm\[quantization\]"):
        quantization_config("int8", CPU)


def test_quantised_loading_without_accelerate_names_it_and_the_extra(installed):
    installed("torchao")
    with pytest.raises(ImportError, match=r"accelerate package: .*llama-index-vlm\[quantization\]"):
        quantization_config("int8", CPU)


def test_int8_is_refused_on_mps():
    with pytest.raises(UnsupportedDeviceError, match="CPUs and CUDA GPUs"):
        quantization_config("int8", torch.device("mps"))


def test_an_unknown_quantisation_is_refused():
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantization_config("2bit", CPU)


def test_the_vlm_refuses_bitsandbytes_on_a_cpu_before_loading(tiny_checkpoint):
    with pytest.raises(UnsupportedDeviceError, match="needs a CUDA GPU"):
        HuggingFaceVLM.from_pretrained(
            tiny_checkpoint("qwen2_vl"), device="cpu", quantization="4bit"
        )


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None or importlib.util.find_spec("accelerate") is None,
    reason="needs the quantization extra (pip install 'llama-index-vlm[quantization]')",
)
def test_int8_weights_answer_on_a_cpu(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(
        tiny_checkpoint("qwen2_vl"), device="cpu", quantization="int8", max_new_tokens=2
    )
    weights = {
        type(module.weight).__name__
        for module in vlm.model.modules()
        if isinstance(module, torch.nn.Linear)
    }
    assert "Int8Tensor" in weights
    assert vlm.complete("What?").additional_kwargs["completion_tokens"] >= 1


# -- dtype, device map, attention ------------------------------------------------------------


def test_a_bfloat16_vlm_runs_and_answers_in_bfloat16(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(
        tiny_checkpoint("smolvlm"), dtype="bfloat16", max_new_tokens=2
    )
    assert {parameter.dtype for parameter in vlm.model.parameters()} == {torch.bfloat16}
    assert vlm.complete("What?").additional_kwargs["completion_tokens"] >= 1


def _model_loads(loading_calls) -> list[dict]:
    return [kwargs for name, kwargs in loading_calls if "For" in name]


def test_a_device_map_is_passed_to_from_pretrained(tiny_checkpoint, loading_calls):
    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint("qwen2_vl"), device_map="cpu")
    assert [kwargs["device_map"] for kwargs in _model_loads(loading_calls)] == ["cpu"]
    assert vlm.model.device.type == "cpu"


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "colmodernvbert"])
def test_every_load_asks_for_safetensors_and_a_dtype(kind, tiny_checkpoint, loading_calls):
    from llama_index_vlm.encoder import ColPaliEncoder

    path = tiny_checkpoint(kind)
    if kind.startswith("col"):
        ColPaliEncoder.from_pretrained(path, show_progress=False)
    else:
        HuggingFaceVLM.from_pretrained(path)
    (kwargs,) = _model_loads(loading_calls)
    assert kwargs["use_safetensors"] is True and kwargs["dtype"] is torch.float32


def test_auto_attention_is_sdpa_on_a_cpu():
    assert resolve_attn_implementation("auto", QWEN, CPU, torch.float32) == "sdpa"


def test_auto_attention_is_transformers_default_for_a_model_without_sdpa():
    assert resolve_attn_implementation("auto", object, CPU, torch.float32) is None


def test_flash_attention_off_cuda_is_refused_naming_sdpa():
    with pytest.raises(UnsupportedDeviceError, match="attn_implementation='sdpa'"):
        resolve_attn_implementation("flash_attention_2", QWEN, CPU, torch.bfloat16)


def test_an_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        resolve_attn_implementation("fast", QWEN, CPU, torch.float32)


def test_the_loaded_model_uses_the_attention_asked_for(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint("qwen2_vl"), attn_implementation="eager")
    assert vlm.model.config._attn_implementation == "eager"


@pytest.mark.parametrize("option", [{"quantization": "int8"}, {"quantization_config": object()}])
def test_a_retriever_is_never_quantised(tiny_checkpoint, option):
    from llama_index_vlm import ColPaliEncoder
    from llama_index_vlm.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="retrievers are not quantised"):
        ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), device="cpu", **option)
