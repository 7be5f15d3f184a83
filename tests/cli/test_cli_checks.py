"""Every command checks its inputs before it loads a model: paths, checkpoints, filter keys and
the memory the models need (llama_index_vlm.cli.common, .models, .memory).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli, search_lines
from safetensors.numpy import save_file

from llama_index_vlm.cli import memory
from llama_index_vlm.cli.memory import ModelSize, require_memory, weights_bytes
from llama_index_vlm.cli.models import Placement, place
from llama_index_vlm.errors import UsageError


@pytest.fixture
def no_model_loading(monkeypatch):
    """Loading any model fails the test: the command had to stop before."""
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.vlm import HuggingFaceVLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(ColPaliEncoder, "from_pretrained", refuse)
    monkeypatch.setattr(HuggingFaceVLM, "from_pretrained", refuse)


# --------------------------------------------------------------------------- filter keys


def test_a_misspelt_filter_key_is_an_error_with_a_suggestion(indexed, no_model_loading):
    status, out, err = run_cli(
        "search", "q", "--store", indexed["store"], "--filter", "page_nubmer=3"
    )
    assert (status, out) == (2, "")
    assert err.startswith(
        "error: --filter page_nubmer=...: no page has a metadata key 'page_nubmer'; "
        "did you mean page_number? page fields: page_id, doc_id,"
    )


def test_an_unknown_filter_key_lists_the_metadata_keys_in_the_index(tmp_path, no_model_loading):
    from page_documents import document_pages, vectors_for

    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    pages = document_pages("a", 2, topic="tax")
    store.add(pages, page_vectors=vectors_for(pages), fingerprint={"model": "m"})
    status, _, err = run_cli("ask", "q", "--store", store.uri, "--filter", "topc=tax")
    assert status == 2
    assert "did you mean topic?" in err and err.endswith("; metadata keys in this index: topic\n")


def test_a_metadata_key_present_in_the_index_is_a_valid_filter(tmp_path, tiny_checkpoint):
    from page_documents import document_pages

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.ingestion import ingest_documents
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    encoder = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), show_progress=False)
    ingest_documents(document_pages("a", 2, topic="tax"), encoder, store, show_progress=False)
    status, out, _ = run_cli("search", "q", "--store", store.uri, "--filter", "topic=tax", "--json")
    assert status == 0 and len(json.loads(out)) == 2


# --------------------------------------------------------------------------- paths


def test_index_refuses_a_missing_path_before_loading(tmp_path, no_model_loading):
    status, _, err = run_cli("index", tmp_path / "nope", "--store", tmp_path / "index")
    assert status == 2
    assert err == f"error: no such file or folder: {tmp_path / 'nope'}\n"


def test_index_refuses_a_folder_without_documents_before_loading(tmp_path, no_model_loading):
    (tmp_path / "notes.txt").write_text("no pages here")
    status, _, err = run_cli("index", tmp_path, "--store", tmp_path / "index")
    assert status == 2 and err.startswith("error: no PDF or image files (")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("./no/such/dir", "--model: there is no directory './no/such/dir', and it is not a hub id"),
        ("vidore/not-downloaded-hf", "(HF_HUB_OFFLINE is set); download it first (`hf download"),
        ("file", "--model: '{file}' is a file; pass the checkpoint's directory"),
    ],
    ids=["missing-dir", "offline-hub-id", "a-file"],
)
def test_index_refuses_a_checkpoint_that_is_not_there_before_loading(
    indexed, tmp_path, monkeypatch, no_model_loading, value, message
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if value == "file":
        value = str(tmp_path / "weights.bin")
        (tmp_path / "weights.bin").write_bytes(b"0")
        message = message.format(file=value)
    status, _, err = run_cli(
        "index", indexed["pdf"], "--store", tmp_path / "index", "--model", value
    )
    assert status == 2 and message in err


def test_ask_checks_the_vlm_before_loading_the_retriever(indexed, monkeypatch, no_model_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, _, err = run_cli(
        "ask", "What?", "--store", indexed["store"], "--vlm", "llava-hf/not-downloaded"
    )
    assert status == 2 and "--vlm: cannot load a checkpoint from 'llava-hf/not-downloaded'" in err


# --------------------------------------------------------------------------- memory


def _checkpoint(tmp_path, **tensors):
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def _mixed_checkpoint(tmp_path):
    """200 float32 weights and 8 int64 positions."""
    return _checkpoint(
        tmp_path,
        weight=np.zeros((10, 20), dtype=np.float32),
        positions=np.zeros(8, dtype=np.int64),
    )


def test_weights_are_counted_from_safetensors_headers_in_the_dtype_loaded(tmp_path):
    directory = _mixed_checkpoint(tmp_path)
    # Floating tensors take the loaded dtype's size; others keep theirs.
    assert weights_bytes(directory, "float32") == 200 * 4 + 8 * 8
    assert weights_bytes(directory, "bfloat16") == 200 * 2 + 8 * 8


def test_a_quantised_model_counts_its_floats_at_the_quantised_size(tmp_path):
    directory = _mixed_checkpoint(tmp_path)
    assert weights_bytes(directory, "int8") == 200 * 1 + 8 * 8
    assert weights_bytes(directory, "8bit") == 200 * 1 + 8 * 8
    assert weights_bytes(directory, "4bit") == 200 // 2 + 8 * 8


def test_a_directory_without_weights_has_no_known_size(tmp_path):
    assert weights_bytes(tmp_path, "float32") is None


def test_models_that_fit_in_free_memory_pass(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 8 * 2**30)
    require_memory([ModelSize("m", "bfloat16", 4 * 2**30)], "cpu")


def test_models_that_do_not_fit_are_refused_with_advice(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 20 * 2**30)
    llava = ModelSize("llava-hf/llava-1.5-7b-hf", "float32", 28 * 2**30)
    with pytest.raises(UsageError) as refusal:
        require_memory([llava, None], "cpu")
    assert str(refusal.value) == (
        "loading llava-hf/llava-1.5-7b-hf in float32 (28.0 GB) needs about 31.3 GB of memory on "
        "cpu, and 20.0 GB is free; --dtype bfloat16 halves that; a GPU (--device cuda) holds it "
        "in its own memory; close other programs, or use a smaller model"
    )


def test_ask_refuses_models_that_do_not_fit_before_loading_them(
    indexed, tiny_checkpoint, monkeypatch, no_model_loading
):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1024)
    status, _, err = run_cli(
        "ask", "What?", "--store", indexed["store"], "--vlm", tiny_checkpoint("llava")
    )
    assert status == 2
    assert f"error: loading {indexed['colpali']} in bfloat16 (" in err
    assert "and 0.0 GB is free" in err


def test_auto_dtype_on_a_cpu_is_bfloat16():
    assert place([], "cpu", "auto") == Placement("cpu", "bfloat16")


def test_a_dtype_given_is_kept():
    assert place([], "cpu", "float32") == Placement("cpu", "float32")


def test_search_runs_in_float32_when_asked(indexed):
    status, out, _ = run_cli("search", "revenue", "--store", indexed["store"], "--dtype", "float32")
    assert status == 0 and len(search_lines(out)) == 3


def test_an_unknown_dtype_is_an_argument_error(indexed):
    status, _, err = run_cli("search", "q", "--store", indexed["store"], "--dtype", "int8")
    assert status == 2 and "argument --dtype: invalid choice: 'int8'" in err


# --------------------------------------------------------------------------- quiet loading


def test_loading_shows_no_library_progress_bar_or_warning(indexed):
    _, _, err = run_cli("search", "revenue", "--store", indexed["store"])
    assert "Loading weights" not in err and "torchvision" not in err


def test_verbose_shows_the_libraries_progress_bars(indexed):
    _, _, err = run_cli("search", "revenue", "--store", indexed["store"], "--verbose")
    assert "Loading weights" in err
