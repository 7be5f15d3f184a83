"""PDFPageReader (reader/page_reader.py): its options, doc ids, loading folders and lists,
the per-file hooks, bad inputs and on_error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile import encoded
from pdfs import (
    write_damaged_page_pdf,
    write_encrypted_pdf,
    write_image_pdf,
    write_truncated_pdf,
)
from PIL import Image

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.pages import doc_id_for_file
from llama_index_vlm.reader import PDFPageReader

from .page_pixels import BLUE

# ------------------------------------------------------------------------------------ options


def test_the_page_range_must_be_ordered():
    with pytest.raises(ValueError, match="last_page"):
        PDFPageReader(first_page=3, last_page=2)


def test_the_reader_is_serialised_as_pdf_page_reader():
    assert PDFPageReader.class_name() == "PDFPageReader"


def test_the_reader_round_trips_through_to_dict():
    reader = PDFPageReader(dpi=100, renderer="pdf2image", image_format="PNG", last_page=3)
    assert PDFPageReader.from_dict(reader.to_dict()) == reader


def test_on_error_must_be_known(solid_pdf):
    with pytest.raises(ValueError, match="on_error"):
        PDFPageReader().load_data(solid_pdf, on_error="ignore")


def test_async_load_reads_every_page(solid_pdf):
    docs = asyncio.run(PDFPageReader(dpi=10).aload_data(solid_pdf))
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2, 3]


# ------------------------------------------------------------------------------------- doc_id


def test_the_doc_id_is_the_sha256_of_the_bytes(solid_pdf):
    doc_id = PDFPageReader(dpi=10).load_data(solid_pdf)[0].metadata["doc_id"]
    assert doc_id == hashlib.sha256(solid_pdf.read_bytes()).hexdigest()


def test_a_renamed_copy_has_the_same_doc_id(tmp_path, solid_pdf):
    copy = tmp_path / "renamed copy.pdf"
    shutil.copy(solid_pdf, copy)
    reader = PDFPageReader(dpi=10)
    original = reader.load_data(solid_pdf)[0].metadata["doc_id"]
    assert reader.load_data(copy)[0].metadata["doc_id"] == original


def test_changed_bytes_change_the_doc_id(tmp_path, solid_pdf):
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(solid_pdf.read_bytes() + b"\n% appended comment\n")
    reader = PDFPageReader(dpi=10)
    original = reader.load_data(solid_pdf)[0].metadata["doc_id"]
    assert reader.load_data(changed)[0].metadata["doc_id"] != original


def test_the_doc_id_is_doc_id_for_file(solid_pdf):
    doc_id = PDFPageReader(dpi=10).load_data(solid_pdf)[0].metadata["doc_id"]
    assert doc_id_for_file(solid_pdf) == doc_id


def test_doc_id_hashing_streams_large_files(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 12345))  # several chunks and a partial one
    assert doc_id_for_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_a_users_doc_id_names_the_pages(solid_pdf):
    docs = PDFPageReader(dpi=10).load_data(solid_pdf, doc_id="annual-2023")
    assert [doc.id_ for doc in docs] == ["annual-2023-p1", "annual-2023-p2", "annual-2023-p3"]


def test_a_users_doc_id_is_the_doc_id_metadata(solid_pdf):
    docs = PDFPageReader(dpi=10).load_data(solid_pdf, doc_id="annual-2023")
    assert {doc.metadata["doc_id"] for doc in docs} == {"annual-2023"}


def test_a_users_doc_id_needs_exactly_one_file(tmp_path, solid_pdf):
    write_image_pdf(tmp_path / "other.pdf", 1)
    with pytest.raises(ValueError, match="doc_id"):
        PDFPageReader().load_data(tmp_path, doc_id="one-id")


# ------------------------------------------------------------------------ folders and copies


@pytest.fixture
def folder_with_a_copy(tmp_path):
    """A folder holding a 2-page PDF and a byte-identical copy of it under another name."""
    write_image_pdf(tmp_path / "a.pdf", 2)
    shutil.copy(tmp_path / "a.pdf", tmp_path / "copy of a.pdf")
    return tmp_path


def test_identical_files_in_one_load_are_read_once(folder_with_a_copy):
    docs = PDFPageReader(dpi=10).load_data(folder_with_a_copy)
    assert [doc.metadata["file_name"] for doc in docs] == ["a.pdf", "a.pdf"]


def test_a_skipped_identical_file_is_named_in_a_warning(folder_with_a_copy, caplog):
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader"):
        PDFPageReader(dpi=10).load_data(folder_with_a_copy)
    assert "copy of a.pdf" in caplog.text


def test_a_folder_without_pages_is_an_empty_input(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EmptyInputError, match="no PDF or image files"):
        PDFPageReader().load_data(tmp_path)


# --------------------------------------------------------------------------------- bad inputs


def _written(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    """A maker of the file ``name``, holding ``data``, in the folder it is given."""

    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


_zero_byte = _written("empty.pdf", b"")
_text_named_pdf = _written("readme.pdf", b"This is a plain text file, not a PDF.\n" * 20)
_truncated_png = _written("cut.png", lambda: encoded(Image.effect_noise((64, 64), 40), "PNG")[:300])

BAD_INPUTS = {
    "truncated pdf": (lambda p: write_truncated_pdf(p / "truncated.pdf"), "truncated"),
    "encrypted pdf": (lambda p: write_encrypted_pdf(p / "locked.pdf"), "password"),
    "zero-byte file": (_zero_byte, "empty file"),
    "text named .pdf": (_text_named_pdf, "not a PDF"),
    "damaged page": (lambda p: write_damaged_page_pdf(p / "damaged.pdf"), "page 2 of 3"),
    "unsupported extension": (
        _written("slides.docx", b"PK\x03\x04 not really"),
        "unsupported file type '.docx'",
    ),
    "missing path": (lambda p: p / "missing.pdf", "no such file"),
    "text named .png": (_written("photo.png", b"not an image"), "not a valid png"),
    "truncated png": (_truncated_png, "truncated or corrupted"),
}
# count_pages reads no pixels, so it cannot see pixel data cut short.
FAIL_WITHOUT_DECODING = [case for case in BAD_INPUTS if case != "truncated png"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_raises_unreadable_document_error_naming_it(tmp_path, case, renderer):
    make, reason = BAD_INPUTS[case]
    path = make(tmp_path)

    with pytest.raises(UnreadableDocumentError) as raised:
        PDFPageReader(renderer=renderer, dpi=10).load_data(path)
    assert path.name in str(raised.value)
    assert raised.value.path == str(path)
    assert reason in raised.value.reason


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_read_file_refuses_a_bad_input_before_its_first_page(tmp_path, case, renderer):
    path = BAD_INPUTS[case][0](tmp_path)
    with pytest.raises(UnreadableDocumentError, match=path.name):
        next(PDFPageReader(renderer=renderer, dpi=10).read_file(path))


@pytest.mark.parametrize("case", FAIL_WITHOUT_DECODING)
def test_count_pages_refuses_a_bad_input(tmp_path, case, renderer):
    path = BAD_INPUTS[case][0](tmp_path)
    with pytest.raises(UnreadableDocumentError, match=path.name):
        PDFPageReader(renderer=renderer, dpi=10).count_pages(path)


@pytest.fixture
def mixed_folder(tmp_path):
    """Two good files (a 2-page PDF, a PNG) and two bad PDFs, in name order a, b, c, d."""
    write_image_pdf(tmp_path / "a_good.pdf", 2)
    write_encrypted_pdf(tmp_path / "b_locked.pdf")
    write_truncated_pdf(tmp_path / "c_truncated.pdf")
    Image.new("RGB", (8, 8), BLUE).save(tmp_path / "d_good.png")
    return tmp_path


def test_by_default_the_first_bad_file_raises(mixed_folder):
    with pytest.raises(UnreadableDocumentError, match="b_locked.pdf"):
        PDFPageReader(dpi=10).load_data(mixed_folder)


def test_skip_mode_reads_the_good_files(mixed_folder):
    docs = PDFPageReader(dpi=10).load_data(mixed_folder, on_error="skip")
    assert [d.metadata["file_name"] for d in docs] == ["a_good.pdf", "a_good.pdf", "d_good.png"]


def test_skip_mode_logs_each_bad_file_and_its_reason(mixed_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader"):
        PDFPageReader(dpi=10).load_data(mixed_folder, on_error="skip")
    assert "b_locked.pdf" in caplog.text and "password" in caplog.text
    assert "c_truncated.pdf" in caplog.text


# ----------------------------------------------------------------------------- per-file hooks


@pytest.fixture
def hooks_run(tmp_path):
    """The loop an ingestion pipeline runs over a folder with one good PDF (2 pages) and two
    bad ones, plus a missing path: every file is read or reported, none stops it.
    """
    write_image_pdf(tmp_path / "a.pdf", 2)
    _zero_byte(tmp_path)
    _text_named_pdf(tmp_path)
    reader = PDFPageReader(dpi=10)

    pages, failed = [], []
    for path in reader.list_files([tmp_path, tmp_path / "missing.pdf"]):
        try:
            pages.extend(reader.read_file(path))
        except UnreadableDocumentError as error:
            failed.append((os.path.basename(error.path), error.reason))
    return pages, failed


def test_the_per_file_hooks_read_every_good_page(hooks_run):
    pages, _ = hooks_run
    assert len(pages) == 2


def test_the_per_file_hooks_report_each_failure_in_order(hooks_run):
    _, failed = hooks_run
    assert [name for name, _ in failed] == ["empty.pdf", "readme.pdf", "missing.pdf"]


def test_count_pages_counts_a_pdfs_pages(tmp_path):
    path = write_image_pdf(tmp_path / "a.pdf", 2)
    assert PDFPageReader(dpi=10).count_pages(path) == 2
