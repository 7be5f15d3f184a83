"""Fixtures of the server tests: an indexed store, a tiny VLM, apps, and a real uvicorn."""

from __future__ import annotations

import threading

import pytest
from serving import GenerationGate

pytest.importorskip("fastapi", reason="the server tests need the 'server' extra")

REPORT_PAGES = ["Revenue 2023", ["Warranty terms", "two years"], ["Installation", "Mount it"]]


@pytest.fixture(scope="session")
def tiny_vlm(tiny_checkpoint):
    """A tiny LLaVA answering in at most 12 tokens (tests change its generate_kwargs)."""
    from llama_index_vlm.vlm import HuggingFaceVLM

    return HuggingFaceVLM.from_pretrained(tiny_checkpoint("llava"), max_new_tokens=12)


@pytest.fixture
def store(tmp_path, colpali_encoder):
    """A fresh store holding report.pdf (3 pages), indexed with the tiny ColPali."""
    from pdfs import write_text_pdf

    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader
    from llama_index_vlm.store import LanceDBPageStore

    pdf = write_text_pdf(tmp_path / "report.pdf", REPORT_PAGES, width_pt=300, height_pt=400)
    page_store = LanceDBPageStore(uri=str(tmp_path / "vlm_index"))
    ingest([pdf], colpali_encoder, page_store, reader=PDFPageReader(dpi=72), show_progress=False)
    return page_store


@pytest.fixture
def make_app(store, colpali_encoder, tiny_vlm, tmp_path):
    """``make_app(**create_app_kwargs)`` -> a FastAPI app over ``store`` with the tiny models."""
    from llama_index_vlm.server import create_app

    def build(**kwargs):
        kwargs.setdefault("upload_dir", tmp_path / "uploads")
        if "load_models" not in kwargs:
            kwargs.setdefault("encoder", colpali_encoder)
            kwargs.setdefault("vlm", tiny_vlm)
        return create_app(store, **kwargs)

    return build


@pytest.fixture
def client(make_app):
    """A TestClient of the default app (lifespan run)."""
    from fastapi.testclient import TestClient

    with TestClient(make_app()) as test_client:
        yield test_client


@pytest.fixture
def generation_gate(tiny_vlm, monkeypatch):
    """``generation_gate(n_tokens, hold_at=None)`` -> a :class:`GenerationGate` installed on the
    tiny VLM, whose answers are then exactly ``n_tokens`` long."""

    def install(n_tokens: int, hold_at: int | None = None) -> GenerationGate:
        gate = GenerationGate(hold_at)
        for key, value in (
            ("max_new_tokens", n_tokens),
            ("min_new_tokens", n_tokens),
            ("stopping_criteria", [gate]),
        ):
            monkeypatch.setitem(tiny_vlm.generate_kwargs, key, value)
        return gate

    return install


@pytest.fixture
def generate_calls(tiny_vlm, monkeypatch):
    """Records ``model.generate`` calls: how many ran at once at most, and when each ended."""

    class Calls:
        def __init__(self):
            self.running = 0
            self.most_at_once = 0
            self.finished = 0
            self.lock = threading.Lock()

    calls = Calls()
    original = tiny_vlm.model.generate

    def generate(*args, **kwargs):
        with calls.lock:
            calls.running += 1
            calls.most_at_once = max(calls.most_at_once, calls.running)
        try:
            return original(*args, **kwargs)
        finally:
            with calls.lock:
                calls.running -= 1
                calls.finished += 1

    monkeypatch.setattr(tiny_vlm.model, "generate", generate)
    return calls
