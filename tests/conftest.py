"""Shared fixtures. Tests run offline: every model is a tiny checkpoint built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Tiny checkpoints of the real architectures, built once per test session.


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(kind)`` -> path of a tiny checkpoint, built once per session."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")

    def build(kind: str):
        return make_tiny_checkpoint(kind, root / kind)

    return build


@pytest.fixture(scope="session")
def colpali_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), show_progress=False)


@pytest.fixture(scope="session")
def colqwen2_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colqwen2"), show_progress=False)


# ---------------------------------------------------------------------------------------------
# PDFs and page images for the reader tests, made from scratch by tests/pdfs.py (no binary
# fixtures). Owned by the reader's tests; keep other fixtures above this block.


@pytest.fixture
def solid_pdf(tmp_path):
    """A 3-page PDF written by Pillow: 72 x 144 pt pages, solid red, green and blue."""
    from pdfs import write_image_pdf

    return write_image_pdf(tmp_path / "solid.pdf", 3, size_px=(72, 144))


@pytest.fixture
def text_pdf(tmp_path):
    """A 2-page hand-written PDF whose text layer reads "Revenue 2023", then two lines."""
    from pdfs import write_text_pdf

    pages = ["Revenue 2023", ["Net income 42", "Costs 7"]]
    return write_text_pdf(tmp_path / "text.pdf", pages, width_pt=300, height_pt=300)
