"""PDFs for the reader's tests, made from scratch by tests/pdfs.py (no binary fixtures)."""

from __future__ import annotations

import pytest
from pdfs import write_image_pdf, write_text_pdf


@pytest.fixture
def solid_pdf(tmp_path):
    """A 3-page PDF written by Pillow: 72 x 144 pt pages, solid red, green and blue."""
    return write_image_pdf(tmp_path / "solid.pdf", 3, size_px=(72, 144))


@pytest.fixture
def text_pdf(tmp_path):
    """A 2-page hand-written PDF whose text layer reads "Revenue 2023", then two lines."""
    pages = ["Revenue 2023", ["Net income 42", "Costs 7"]]
    return write_text_pdf(tmp_path / "text.pdf", pages, width_pt=300, height_pt=300)


@pytest.fixture(params=["pypdfium2", "pdf2image"])
def renderer(request):
    """Each PDF renderer in turn: a test taking it runs once with pypdfium2, once with pdf2image."""
    return request.param
