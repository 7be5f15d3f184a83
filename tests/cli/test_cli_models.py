"""Loading the models (llama_index_vlm.cli.models): checkpoints that cannot be used fail with
one line and status 2, and a model that does not match the index is refused.
"""

from __future__ import annotations

import pytest
from cli_runner import run_cli


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--model", "empty_dir", "holds no config.json"),
        ("--model", "vidore/no-such-checkpoint-hf", "could not be fetched from the Hugging Face"),
        ("--model", "llava", "not a ColPali-family retriever"),
        ("--vlm", "colpali", "--vlm: "),
        ("--vlm", "vidore/no-such-vlm-hf", "pass a local directory"),
    ],
    ids=["empty-dir", "offline-hub-id", "wrong-family", "retriever-as-vlm", "offline-vlm"],
)
def test_bad_checkpoints_fail_without_traceback(
    indexed, tiny_checkpoint, tmp_path, monkeypatch, option, value, message
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty_dir").mkdir()
    value = {"empty_dir": tmp_path / "empty_dir"}.get(value, value)
    if value in ("llava", "colpali"):
        value = tiny_checkpoint(value)
    # The other model is a good one: every checkpoint is checked before any is loaded.
    good = ["--vlm", tiny_checkpoint("llava")] if option == "--model" else []
    status, out, err = run_cli("ask", "What?", "--store", indexed["store"], option, value, *good)
    assert status == 2 and out == ""
    # Loading a checkpoint may draw a progress bar first; the error is the last line.
    assert err.splitlines()[-1].startswith("error: ")
    assert message in err and "Traceback" not in err


def test_another_model_is_refused_for_an_existing_index(indexed, tiny_checkpoint):
    status, _, err = run_cli(
        "search", "q", "--store", indexed["store"], "--model", tiny_checkpoint("colqwen2")
    )
    assert status == 2
    assert f"was built with {indexed['colpali']} (ColPaliForRetrieval" in err
    assert "leave out --model" in err
