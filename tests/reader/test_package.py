"""The reader package (reader/__init__.py): what it exports, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import llama_index_vlm.reader as reader


def test_importing_the_reader_imports_neither_torch_nor_transformers():
    # A fresh interpreter: this test session has long imported both.
    code = (
        "import sys, llama_index_vlm.reader\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_reader_exports_what_its_users_import():
    assert set(reader.__all__) == {
        "DEFAULT_MAX_PAGES",
        "IMAGE_EXTENSIONS",
        "PDF_EXTENSIONS",
        "SUPPORTED_EXTENSIONS",
        "PDFPageReader",
        "RenderedPage",
        "fit_dpi",
        "render_pdfium",
        "render_poppler",
    }


def test_every_exported_name_is_defined():
    assert [name for name in reader.__all__ if not hasattr(reader, name)] == []


def test_supported_extensions_are_the_pdf_and_image_extensions():
    assert reader.SUPPORTED_EXTENSIONS == reader.PDF_EXTENSIONS | reader.IMAGE_EXTENSIONS


def test_the_image_extensions_are_the_documented_ones():
    assert reader.IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
