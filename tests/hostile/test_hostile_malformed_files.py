"""Malformed files (issue 13): whatever a file's bytes, reading it yields pages or raises that
file's UnreadableDocumentError, never another exception, and an ingest run goes on.

Fuzzed from valid files built here: byte-flipped multi-page TIFFs, PNGs and PDFs, PNGs with
huge or very many chunks, PDFs with damaged cross-reference tables; and a valid page too wide
for JPEG.
"""

from __future__ import annotations

import base64
import io

import pytest
from bombs import (
    broken_xref_pdf,
    encoded,
    flip_bytes,
    huge_chunk_png,
    multipage_tiff,
    text_chunk_png,
    wide_png,
)
from pdfs import PdfPageSpec, build_pdf, write_numbered_pdf
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

# Pillow warns about the fuzzed TIFFs' tags while it reads them: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _noisy_png() -> bytes:
    return encoded(Image.effect_noise((40, 30), 50).convert("RGB"), "PNG")


def _small_pdf() -> bytes:
    content = b"0 0 1 rg 10 10 50 50 re f BT /F1 12 Tf 20 80 Td (fuzz) Tj ET"
    return build_pdf([PdfPageSpec(120, 120, content)] * 3)


def _malformed_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    tiff, png, pdf = multipage_tiff(), _noisy_png(), _small_pdf()
    for seed in range(40):
        files[f"flipped-{seed}.tif"] = flip_bytes(tiff, seed, n_flips=1 + seed % 12)
    for seed in range(15):
        files[f"flipped-{seed}.png"] = flip_bytes(png, seed, n_flips=1 + seed % 6)
        files[f"flipped-{seed}.pdf"] = flip_bytes(pdf, seed, n_flips=1 + seed % 6)
    for seed in range(15):
        files[f"xref-{seed}.pdf"] = broken_xref_pdf(seed)
    for claimed in (0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 30, 100_000):
        files[f"chunk-{claimed}.png"] = huge_chunk_png(claimed)
    files["text-chunks.png"] = text_chunk_png(n_chunks=40, chunk_bytes=1 << 20)
    return files


@pytest.fixture(scope="module")
def malformed(tmp_path_factory):
    """The malformed files, written into one folder."""
    folder = tmp_path_factory.mktemp("malformed")
    for name, data in _malformed_files().items():
        (folder / name).write_bytes(data)
    return folder


def _read(reader: PDFPageReader, path) -> int | UnreadableDocumentError:
    """The number of pages read, or the file's UnreadableDocumentError (anything else raises)."""
    try:
        reader.count_pages(path)
        return len(reader.load_data(path))
    except UnreadableDocumentError as error:
        return error


@pytest.mark.parametrize("mode", ["worker", "in process"])
def test_every_malformed_file_reads_or_fails_as_unreadable(malformed, mode):
    limits = {} if mode == "worker" else dict(render_timeout=None, render_memory_limit=None)
    reader = PDFPageReader(dpi=36, **limits)
    outcomes = {path.name: _read(reader, path) for path in sorted(malformed.iterdir())}
    refused = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    assert all(outcomes[name].path == str(malformed / name) for name in refused)
    assert refused, "the fuzz found nothing to refuse: it tests nothing"
    assert len(refused) < len(outcomes), "the fuzz found nothing readable"


def test_an_ingest_of_malformed_files_goes_on_and_stores_only_whole_files(
    tmp_path, malformed, colpali_encoder
):
    docs = tmp_path / "docs"
    docs.mkdir()
    for path in malformed.iterdir():
        (docs / path.name).write_bytes(path.read_bytes())
    good = write_numbered_pdf(docs / "zz-good.pdf", 2)
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    report = ingest(docs, colpali_encoder, store, reader=PDFPageReader(dpi=36), show_progress=False)
    assert all(failed.reason for failed in report.failed)
    stored = {document.file_path: document for document in store.documents()}
    assert str(good) in stored
    failed = {failed.path for failed in report.failed}
    assert not failed & set(stored)  # a failed file leaves nothing behind
    for document in stored.values():  # and a stored one is whole
        assert document.pages == document.page_count


def test_a_page_wider_than_jpeg_allows_is_stored_as_png(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(wide_png(70_000, 8))
    (doc,) = PDFPageReader().load_data(path)
    assert doc.image_mimetype == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(doc.image))) as stored:
        assert stored.size == (70_000, 8)


def test_an_ingest_run_indexes_a_page_wider_than_jpeg_allows(tmp_path, colpali_encoder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "wide.png").write_bytes(wide_png(70_000, 8))
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    report = ingest(docs, colpali_encoder, store, show_progress=False)
    assert (report.pages_added, report.failed) == (1, [])
