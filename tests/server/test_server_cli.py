"""``llama-index-vlm serve``: its checks before loading anything, and one real run."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from llama_index_vlm.cli import main
from llama_index_vlm.cli.serve import bind


def run_cli(*argv: object) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([str(arg) for arg in argv])
    return status, err.getvalue()


def test_help_does_not_import_the_web_stack():
    code = (
        "import sys; from llama_index_vlm.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip().endswith("[]")


def test_a_missing_store_is_refused_before_loading(tmp_path):
    status, err = run_cli("serve", "--store", tmp_path / "nowhere")

    assert status == 2
    assert "no index at" in err and "mkdir" in err


def test_a_missing_model_directory_is_refused(tmp_path):
    status, err = run_cli("serve", "--store", tmp_path, "--model", tmp_path / "no" / "model")

    assert status == 2 and "--model" in err and "no such checkpoint directory" in err


def test_a_public_address_without_a_token_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_INDEX_VLM_TOKEN", raising=False)

    status, err = run_cli("serve", "--store", tmp_path, "--no-vlm", "--host", "0.0.0.0")

    assert status == 2
    assert "refusing to listen on 0.0.0.0 without a token" in err and "--insecure" in err


def test_a_busy_port_is_refused(tmp_path):
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        status, err = run_cli("serve", "--store", tmp_path, "--no-vlm", "--port", port)
    finally:
        taken.close()

    assert status == 2 and f"port {port} on 127.0.0.1 is in use" in err


def test_an_empty_token_is_refused(tmp_path):
    status, err = run_cli("serve", "--store", tmp_path, "--token", " ")

    assert status == 2 and "the token is empty" in err


@pytest.mark.slow
def test_serve_answers_until_interrupted(store, tiny_checkpoint):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLAMA_INDEX_VLM_TOKEN": "s3cret"}
    command = [sys.executable, "-m", "llama_index_vlm.cli", "serve", "--store", store.uri]
    command += ["--vlm", tiny_checkpoint("llava"), "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first_line = process.stdout.readline().decode()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)\?token=s3cret", first_line).group(1)
        headers = {"Authorization": "Bearer s3cret"}
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}health", headers=headers).status_code != 200:
            assert time.monotonic() < deadline and process.poll() is None, "not ready"
            time.sleep(0.2)
        search = httpx.post(f"{url}search", json={"query": "revenue"}, headers=headers)
        refused = httpx.get(f"{url}info")
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=60)

    assert [hit["file_name"] for hit in search.json()["results"]] == ["report.pdf"] * 3
    assert refused.status_code == 401
    assert status == 0


def test_a_search_device_without_a_gpu_is_refused_before_listening(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, err = run_cli("serve", "--store", tmp_path, "--no-vlm", "--search-device", "cuda")

    assert status == 2
    assert "--search-device" in err and "torch sees no CUDA GPU" in err


def test_search_processes_must_be_a_positive_number(tmp_path):
    status, err = run_cli("serve", "--store", tmp_path, "--no-vlm", "--search-processes", "0")

    assert status == 2
    assert "--search-processes" in err
