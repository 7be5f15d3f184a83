"""Fixtures of the ingestion tests: a reader at a small resolution, and an empty store."""

from __future__ import annotations

import pytest

from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

# 200 x 200 pt pages at 36 dpi are 100 x 100 pixels: the tiny model sees 32 x 32 anyway.
DPI = 36


@pytest.fixture(scope="session")
def reader() -> PDFPageReader:
    """A PDF reader rendering at :data:`DPI`, in this process: :func:`fail_render_call`
    patches this process's pypdfium2 (the render workers have their own tests, in
    tests/hostile/).
    """
    return PDFPageReader(dpi=DPI, render_timeout=None, render_memory_limit=None)


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    """An empty page store in the test's temporary folder."""
    return LanceDBPageStore(uri=str(tmp_path / "index"))


@pytest.fixture
def fail_render_call(monkeypatch):
    """``fail_render_call(n)``: make pypdfium2's n-th page render from now on raise, as a
    damaged page does (``monkeypatch.undo()`` heals it).
    """
    import pypdfium2 as pdfium

    def fail(failing_call: int) -> None:
        real_render = pdfium.PdfPage.render
        calls: list[int] = []

        def render(page, *args, **kwargs):
            calls.append(1)
            if len(calls) == failing_call:
                raise pdfium.PdfiumError("simulated damaged page")
            return real_render(page, *args, **kwargs)

        monkeypatch.setattr(pdfium.PdfPage, "render", render)

    return fail
