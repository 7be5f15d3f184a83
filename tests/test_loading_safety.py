"""Loading safety (issue 7): checkpoints never run code they carry.

- No pickle: the package's source never calls ``torch.load`` (without ``weights_only=True``),
  ``pickle``, ``joblib`` or ``np.load(allow_pickle=True)``; every tiny checkpoint kind loads
  with ``torch.load`` and ``pickle`` made to raise (the weights are safetensors); and a
  checkpoint whose weights are a malicious pickle is refused without running its payload.
- No remote code: ``trust_remote_code`` is never on unless the user turns it on, and a local
  checkpoint whose config points at its own Python code (``auto_map``) loads the native class
  without importing that code.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llama_index_vlm
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import InvalidCheckpointError
from llama_index_vlm.vlm import HuggingFaceVLM

pytestmark = pytest.mark.timeout(180)

PACKAGE = Path(llama_index_vlm.__file__).parent
ENCODER_KINDS = ["colpali", "colqwen2", "colqwen2_5", "colmodernvbert"]
VLM_KINDS = [
    "llava",
    "llava_next",
    "llava_onevision",
    "paligemma",
    "blip2",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "smolvlm",
    "idefics3",
    "gemma3",
]


def _load(kind: str, path, **kwargs):
    if kind in ENCODER_KINDS:
        return ColPaliEncoder.from_pretrained(path, show_progress=False, **kwargs)
    return HuggingFaceVLM.from_pretrained(path, **kwargs)


# ---------------------------------------------------------------------------- the source


def _unsafe_calls(source: str) -> list[str]:
    """Calls in ``source`` that can unpickle, or that turn remote code on."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
        if name.endswith(("torch.load", "serialization.load")) or name == "load":
            if keywords.get("weights_only") != "True":
                found.append(f"{name} without weights_only=True")
        if name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle"):
            found.append(name)
        if name.endswith(("np.load", "numpy.load")) and keywords.get("allow_pickle") == "True":
            found.append(f"{name}(allow_pickle=True)")
        if keywords.get("trust_remote_code") == "True":
            found.append(f"{name}(trust_remote_code=True)")
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_source_never_unpickles_nor_trusts_remote_code():
    assert len(SOURCES) > 20
    problems = {
        str(path.relative_to(PACKAGE)): calls
        for path in SOURCES
        if (calls := _unsafe_calls(path.read_text()))
    }
    assert problems == {}


def test_no_module_of_the_package_imports_a_pickle_library():
    assert len(SOURCES) > 20
    for path in SOURCES:
        assert not _imported(path.read_text()) & {"pickle", "dill", "joblib", "cloudpickle"}, path


def _imported(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_scanner_finds_every_unsafe_call():
    bad = (
        "import torch, pickle, numpy as np\n"
        "torch.load(path)\n"
        "torch.load(path, weights_only=False)\n"
        "pickle.loads(data)\n"
        "np.load(path, allow_pickle=True)\n"
        "Model.from_pretrained(path, trust_remote_code=True)\n"
    )
    assert len(_unsafe_calls(bad)) == 5


def test_the_scanner_passes_safe_calls():
    assert _unsafe_calls("torch.load(path, weights_only=True)\nnp.load(path)\n") == []


# -------------------------------------------------------------------------- loading


def _forbid_unpickling(monkeypatch) -> None:
    """Make ``torch.load`` and ``pickle`` raise, wherever a module holds a reference to them."""

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    originals = {id(torch.load), id(pickle.load), id(pickle.loads)}
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if id(value) in originals:
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("kind", ENCODER_KINDS + VLM_KINDS)
def test_every_checkpoint_kind_holds_only_safetensors_weights(tiny_checkpoint, kind):
    path = tiny_checkpoint(kind)
    weights = {p.name for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".pt")}
    assert weights and all(name.endswith(".safetensors") for name in weights), weights


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENCODER_KINDS + VLM_KINDS)
def test_every_checkpoint_kind_loads_without_unpickling(monkeypatch, tiny_checkpoint, kind):
    _forbid_unpickling(monkeypatch)  # torch.load and pickle raise an AssertionError
    loaded = _load(kind, tiny_checkpoint(kind))
    assert type(loaded.model).__module__.startswith("transformers.models.")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENCODER_KINDS + VLM_KINDS)
def test_every_checkpoint_kind_loads_with_remote_code_off(tiny_checkpoint, loading_calls, kind):
    _load(kind, tiny_checkpoint(kind))
    models = [kwargs for name, kwargs in loading_calls if "For" in name or "Model" in name]
    assert models, loading_calls
    assert all(kwargs.get("trust_remote_code") is False for kwargs in models), models
    assert not any(kwargs.get("trust_remote_code") for _, kwargs in loading_calls)


def test_remote_code_is_on_when_the_user_turns_it_on(tiny_checkpoint, loading_calls):
    _load("llava", tiny_checkpoint("llava"), trust_remote_code=True)
    assert any(kwargs.get("trust_remote_code") is True for _, kwargs in loading_calls)


def test_remote_code_is_off_by_default():
    assert HuggingFaceVLM.model_fields["trust_remote_code"].default is False


@pytest.mark.parametrize("kind", ["colpali", "llava"])
def test_code_shipped_in_a_checkpoint_is_never_imported(tmp_path, tiny_checkpoint, kind):
    path = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint(kind), path)
    marker = tmp_path / "remote-code-ran"
    (path / "shipped_code.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig as ShippedConfig\n"
        "from transformers import PreTrainedModel as ShippedModel\n"
    )
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "shipped_code.ShippedConfig",
        "AutoModel": "shipped_code.ShippedModel",
        "AutoProcessor": "shipped_code.ShippedConfig",
    }
    (path / "config.json").write_text(json.dumps(config))

    loaded = _load(kind, path)

    assert not marker.exists()
    assert type(loaded.model).__module__.startswith("transformers.models.")


def test_a_malicious_pickle_checkpoint_never_runs_its_payload(
    tmp_path, monkeypatch, tiny_checkpoint
):
    path = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint("colpali"), path)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = {}
    for weights in path.glob("*.safetensors"):
        state.update(load_file(weights))
        weights.unlink()
    state["payload"] = Payload()
    torch.save(state, path / "pytorch_model.bin")
    loads = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)

    with pytest.raises(InvalidCheckpointError, match="loads safetensors weights only") as refused:
        ColPaliEncoder.from_pretrained(path, show_progress=False)

    assert "weights_only" not in str(refused.value)
    assert not marker.exists()
    assert loads == []  # never even unpickled with weights_only=True
