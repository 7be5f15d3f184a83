"""PDFPageReader: pages, metadata, both renderers, streaming, bad inputs and odd images."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import math
import os
import shutil

import numpy as np
import pdf2image
import pypdfium2 as pdfium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_index.core.schema import ImageDocument, MetadataMode
from pdfs import (
    PdfPageSpec,
    build_pdf,
    text_content,
    write_damaged_page_pdf,
    write_encrypted_pdf,
    write_image_pdf,
    write_report_pdf,
    write_sized_pdf,
    write_text_pdf,
    write_truncated_pdf,
)
from PIL import Image

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.images import encode_image, to_rgb
from llama_index_vlm.pages import doc_id_for_file, page_id_for
from llama_index_vlm.reader import PDFPageReader, fit_dpi, render_pdfium
from llama_index_vlm.reader.documents import encode_page

RENDERERS = ["pypdfium2", "pdf2image"]
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def pixels(doc: ImageDocument) -> Image.Image:
    """The document's own image, decoded from the base64 it carries."""
    return Image.open(doc.resolve_image()).convert("RGB")


def centre(doc: ImageDocument) -> tuple[int, int, int]:
    image = pixels(doc)
    return image.getpixel((image.width // 2, image.height // 2))


def close_to(colour, expected, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


# ------------------------------------------------------------------------------ pages, sizes


@pytest.mark.parametrize("renderer", RENDERERS)
def test_renders_every_page_at_the_requested_dpi(solid_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=144).load_data(solid_pdf)

    assert [doc.metadata["page_number"] for doc in docs] == [1, 2, 3]
    # A 72 x 144 pt page is 1 x 2 inches: 144 x 288 pixels at 144 dpi.
    assert {pixels(doc).size for doc in docs} == {(144, 288)}
    assert [(d.metadata["width"], d.metadata["height"]) for d in docs] == [(144, 288)] * 3
    for doc, colour in zip(docs, [RED, GREEN, BLUE], strict=True):
        assert close_to(centre(doc), colour), (centre(doc), colour)


@pytest.mark.parametrize("renderer", RENDERERS)
def test_dpi_option_scales_pages(solid_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=36).load_data(solid_pdf)
    assert {pixels(doc).size for doc in docs} == {(36, 72)}
    assert {doc.metadata["dpi"] for doc in docs} == {36}


@pytest.mark.parametrize("renderer", RENDERERS)
def test_page_range_is_one_based_and_inclusive(tmp_path, renderer):
    path = write_text_pdf(tmp_path / "five.pdf", [f"page {n}" for n in range(1, 6)])

    docs = PDFPageReader(renderer=renderer, first_page=2, last_page=4, dpi=20).load_data(path)
    assert [doc.metadata["page_number"] for doc in docs] == [2, 3, 4]
    assert {doc.metadata["page_count"] for doc in docs} == {5}

    tail = PDFPageReader(renderer=renderer, first_page=4, last_page=99, dpi=20).load_data(path)
    assert [doc.metadata["page_number"] for doc in tail] == [4, 5]
    assert PDFPageReader(renderer=renderer, first_page=9, dpi=20).load_data(path) == []


def test_page_range_must_be_ordered():
    with pytest.raises(ValueError, match="last_page"):
        PDFPageReader(first_page=3, last_page=2)


def test_renderers_draw_the_same_page(tmp_path):
    path = write_report_pdf(tmp_path / "report.pdf", 1)
    options = dict(dpi=72, image_format="PNG")
    by_pdfium = pixels(PDFPageReader(renderer="pypdfium2", **options).load_data(path)[0])
    by_poppler = pixels(PDFPageReader(renderer="pdf2image", **options).load_data(path)[0])

    assert by_pdfium.size == by_poppler.size == (612, 792)
    difference = np.abs(np.asarray(by_pdfium, int) - np.asarray(by_poppler, int))
    assert difference.mean() < 6  # anti-aliasing differs; a blank or shifted page would not
    assert np.asarray(by_pdfium).min() < 50  # and the page is not blank


# ----------------------------------------------------------------------------------- metadata


def test_metadata_and_ids(solid_pdf):
    docs = PDFPageReader().load_data(solid_pdf)
    digest = hashlib.sha256(solid_pdf.read_bytes()).hexdigest()

    second = docs[1]
    assert second.metadata == {
        "doc_id": digest,
        "page_id": f"{digest}-p2",
        "file_path": str(solid_pdf.resolve()),
        "file_name": "solid.pdf",
        "page_number": 2,
        "page_count": 3,
        "width": 144,
        "height": 288,
        "dpi": 144,
    }
    assert second.id_ == second.doc_id == page_id_for(digest, 2) == f"{digest}-p2"
    assert second.image_mimetype == "image/jpeg"
    assert second.text == ""
    assert len({doc.id_ for doc in docs}) == 3


def test_the_llm_sees_file_name_and_page_number_only(solid_pdf):
    doc = PDFPageReader().load_data(solid_pdf, extra_info={"source": "annual report"})[0]

    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        shown = doc.get_metadata_str(mode)
        assert "file_name: solid.pdf" in shown and "page_number: 1" in shown
        assert "source: annual report" in shown
        for hidden in ("doc_id", "page_id", "file_path", "page_count", "width", "dpi"):
            assert hidden not in shown
    assert doc.metadata["source"] == "annual report"


def test_image_resolves_without_the_original_file(tmp_path, solid_pdf):
    moved = tmp_path / "gone.pdf"
    shutil.copy(solid_pdf, moved)
    docs = PDFPageReader().load_data(moved)
    moved.unlink()

    assert close_to(centre(docs[0]), RED)
    assert base64.b64decode(docs[0].image)[:3] == b"\xff\xd8\xff"  # JPEG bytes, inline


def test_png_format_is_lossless(solid_pdf):
    docs = PDFPageReader(image_format="png").load_data(solid_pdf)
    assert docs[0].image_mimetype == "image/png"
    assert base64.b64decode(docs[0].image)[:8] == b"\x89PNG\r\n\x1a\n"
    rendered = to_rgb(next(render_pdfium(solid_pdf, dpi=144)).image)
    assert np.array_equal(np.asarray(pixels(docs[0])), np.asarray(rendered))


def test_jpeg_fast_path_matches_encode_image(tmp_path):
    path = write_report_pdf(tmp_path / "report.pdf", 1)
    page = next(render_pdfium(path, dpi=50))
    assert page.image.mode == "RGBX"  # pypdfium2 pages come as RGBX, without a copy

    assert encode_page(page.image, "JPEG", 80) == encode_image(to_rgb(page.image), "JPEG", 80)


def test_reader_round_trips_through_to_dict():
    reader = PDFPageReader(dpi=100, renderer="pdf2image", image_format="PNG", last_page=3)
    assert PDFPageReader.class_name() == "PDFPageReader"
    assert PDFPageReader.from_dict(reader.to_dict()) == reader


# ------------------------------------------------------------------------------------- doc_id


def test_doc_id_is_the_sha256_of_the_bytes(tmp_path, solid_pdf):
    copy = tmp_path / "renamed copy.pdf"
    shutil.copy(solid_pdf, copy)
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(solid_pdf.read_bytes() + b"\n% appended comment\n")
    reader = PDFPageReader(dpi=10)

    original = reader.load_data(solid_pdf)[0].metadata["doc_id"]
    assert original == hashlib.sha256(solid_pdf.read_bytes()).hexdigest()
    assert reader.load_data(copy)[0].metadata["doc_id"] == original
    assert reader.load_data(changed)[0].metadata["doc_id"] != original
    assert doc_id_for_file(solid_pdf) == original


def test_doc_id_hashing_streams_large_files(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 12345))  # several chunks and a partial one
    assert doc_id_for_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_user_doc_id_is_honoured(solid_pdf):
    docs = PDFPageReader(dpi=10).load_data(solid_pdf, doc_id="annual-2023")
    assert [doc.id_ for doc in docs] == ["annual-2023-p1", "annual-2023-p2", "annual-2023-p3"]
    assert {doc.metadata["doc_id"] for doc in docs} == {"annual-2023"}


def test_user_doc_id_needs_exactly_one_file(tmp_path, solid_pdf):
    write_image_pdf(tmp_path / "other.pdf", 1)
    with pytest.raises(ValueError, match="doc_id"):
        PDFPageReader().load_data(tmp_path, doc_id="one-id")


# --------------------------------------------------------------------------------- directories


def test_directory_is_walked_sorted_recursively_skipping_hidden(tmp_path):
    root = tmp_path / "docs"
    (root / "b").mkdir(parents=True)
    (root / "b" / "inner").mkdir()
    (root / ".git").mkdir()
    write_image_pdf(root / "c.pdf", 1)
    write_image_pdf(root / "a.pdf", 1, size_px=(10, 10))
    write_image_pdf(root / "b" / "z.pdf", 1, size_px=(11, 11))
    write_image_pdf(root / "b" / "inner" / "y.pdf", 1, size_px=(12, 12))
    Image.new("RGB", (5, 5), GREEN).save(root / "b" / "scan.PNG")
    write_image_pdf(root / ".hidden.pdf", 1, size_px=(13, 13))
    write_image_pdf(root / ".git" / "x.pdf", 1, size_px=(14, 14))
    (root / "notes.txt").write_text("not a page")
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)  # a link cycle
    (root / "dangling.pdf").symlink_to(root / "nowhere.pdf")

    reader = PDFPageReader(dpi=10)
    relative = [str(path.relative_to(root)) for path in reader.list_files(root)]
    assert relative == ["a.pdf", "b/inner/y.pdf", "b/scan.PNG", "b/z.pdf", "c.pdf"]

    names = [doc.metadata["file_name"] for doc in reader.load_data(str(root))]
    assert names == ["a.pdf", "y.pdf", "scan.PNG", "z.pdf", "c.pdf"]


def test_explicit_paths_keep_their_order_and_duplicates_are_read_once(tmp_path):
    first = write_image_pdf(tmp_path / "first.pdf", 1)
    second = write_image_pdf(tmp_path / "second.pdf", 2)
    reader = PDFPageReader(dpi=10)
    files = reader.list_files([second, tmp_path, first])
    assert files == [second, first]


def test_identical_files_in_one_load_are_read_once(tmp_path, caplog):
    write_image_pdf(tmp_path / "a.pdf", 2)
    shutil.copy(tmp_path / "a.pdf", tmp_path / "copy of a.pdf")

    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader"):
        docs = PDFPageReader(dpi=10).load_data(tmp_path)
    assert [doc.metadata["file_name"] for doc in docs] == ["a.pdf", "a.pdf"]
    assert "copy of a.pdf" in caplog.text


def test_directory_without_pages_is_an_empty_input(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EmptyInputError, match="no PDF or image files"):
        PDFPageReader().load_data(tmp_path)


# --------------------------------------------------------------------------------- bad inputs


def _zero_byte(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    return path


def _text_named_pdf(tmp_path):
    path = tmp_path / "readme.pdf"
    path.write_text("This is a plain text file, not a PDF.\n" * 20)
    return path


def _unsupported(tmp_path):
    path = tmp_path / "slides.docx"
    path.write_bytes(b"PK\x03\x04 not really")
    return path


def _text_named_png(tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("not an image")
    return path


def _truncated_png(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:300])
    return path


BAD_INPUTS = {
    "truncated pdf": (lambda p: write_truncated_pdf(p / "truncated.pdf"), "truncated"),
    "encrypted pdf": (lambda p: write_encrypted_pdf(p / "locked.pdf"), "password"),
    "zero-byte file": (_zero_byte, "empty file"),
    "text named .pdf": (_text_named_pdf, "not a PDF"),
    "damaged page": (lambda p: write_damaged_page_pdf(p / "damaged.pdf"), "page 2 of 3"),
    "unsupported extension": (_unsupported, "unsupported file type '.docx'"),
    "missing path": (lambda p: p / "missing.pdf", "no such file"),
    "text named .png": (_text_named_png, "not a valid png"),
    "truncated png": (_truncated_png, "truncated or corrupted"),
}


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_unreadable_document_error(tmp_path, case, renderer):
    make, reason = BAD_INPUTS[case]
    path = make(tmp_path)
    reader = PDFPageReader(renderer=renderer, dpi=10)

    with pytest.raises(UnreadableDocumentError) as raised:
        reader.load_data(path)
    assert path.name in str(raised.value)
    assert raised.value.path == str(path)
    assert reason in raised.value.reason

    # The per-file hooks say the same, before any page is produced; count_pages, which reads
    # no pixels, too, except for pixel data cut short.
    with pytest.raises(UnreadableDocumentError, match=path.name):
        next(reader.read_file(path))
    if case != "truncated png":
        with pytest.raises(UnreadableDocumentError, match=path.name):
            reader.count_pages(path)


def test_encrypted_fixture_is_really_encrypted(tmp_path):
    path = write_encrypted_pdf(tmp_path / "locked.pdf", user_password="user")
    with pdfium.PdfDocument(str(path), password="user") as pdf:  # opens with the password
        assert len(pdf) == 1


@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_damaged_page_fails_before_any_page_is_yielded(tmp_path, renderer):
    path = write_damaged_page_pdf(tmp_path / "damaged.pdf", n_pages=4, damaged_page=3)
    pages = PDFPageReader(renderer=renderer, dpi=10).lazy_load_data(path)
    with pytest.raises(UnreadableDocumentError, match="page 3 of 4"):
        next(pages)
    # Outside the requested range the damaged page is not looked at.
    docs = PDFPageReader(renderer=renderer, dpi=10, last_page=2).load_data(path)
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2]


def test_a_page_failing_mid_render_names_the_page(tmp_path, monkeypatch):
    path = write_text_pdf(tmp_path / "five.pdf", [f"page {n}" for n in range(1, 6)])
    real_render = pdfium.PdfPage.render
    calls = []

    def render_until_page_4(page, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise pdfium.PdfiumError("simulated failure")
        return real_render(page, *args, **kwargs)

    monkeypatch.setattr(pdfium.PdfPage, "render", render_until_page_4)
    pages = PDFPageReader(dpi=10).lazy_load_data(path)
    assert [next(pages).metadata["page_number"] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(UnreadableDocumentError, match="page 4 of 5 could not be rendered"):
        next(pages)


def test_skip_mode_reads_the_good_files_and_logs_the_bad(tmp_path, caplog):
    write_image_pdf(tmp_path / "a_good.pdf", 2)
    write_encrypted_pdf(tmp_path / "b_locked.pdf")
    write_truncated_pdf(tmp_path / "c_truncated.pdf")
    Image.new("RGB", (8, 8), BLUE).save(tmp_path / "d_good.png")
    reader = PDFPageReader(dpi=10)

    with pytest.raises(UnreadableDocumentError, match="b_locked.pdf"):
        reader.load_data(tmp_path)
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader"):
        docs = reader.load_data(tmp_path, on_error="skip")
    assert [d.metadata["file_name"] for d in docs] == ["a_good.pdf", "a_good.pdf", "d_good.png"]
    assert "b_locked.pdf" in caplog.text and "password" in caplog.text
    assert "c_truncated.pdf" in caplog.text


def test_per_file_hooks_report_each_failure(tmp_path):
    """The loop an ingestion pipeline runs: every file is read or reported, none stops it."""
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

    assert len(pages) == 2
    assert [name for name, _ in failed] == ["empty.pdf", "readme.pdf", "missing.pdf"]
    assert reader.count_pages(tmp_path / "a.pdf") == 2


def test_on_error_must_be_known(solid_pdf):
    with pytest.raises(ValueError, match="on_error"):
        PDFPageReader().load_data(solid_pdf, on_error="ignore")


# ----------------------------------------------------------------------------- image files


def _save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def _palette_with_transparency():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))  # left half index 1 (blue), right half index 0 (red)
    image.info["transparency"] = 0  # index 0 is transparent: right half becomes paper
    return image


IMAGE_MODES = {
    # name: (image, file name, expected RGB at the left quarter, at the right quarter)
    "CMYK": (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "cmyk.tiff", (255, 0, 0), None),
    "I;16 max": (Image.new("I;16", (8, 8), 65535), "wide.png", (255, 255, 255), None),
    "I;16 zero": (Image.new("I;16", (8, 8), 0), "dark.tif", (0, 0, 0), None),
    "RGBA transparent": (Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "clear.png", (255,) * 3, None),
    "RGBA opaque": (Image.new("RGBA", (8, 8), (0, 128, 0, 255)), "green.webp", (0, 128, 0), None),
    "LA transparent": (Image.new("LA", (8, 8), (0, 0)), "la.png", (255, 255, 255), None),
    "P transparency": (_palette_with_transparency(), "palette.png", (0, 0, 255), (255, 255, 255)),
    "1 bit": (Image.new("1", (8, 8), 0), "bits.bmp", (0, 0, 0), None),
    "L": (Image.new("L", (8, 8), 77), "grey.jpg", (77, 77, 77), None),
}


@pytest.mark.parametrize("case", list(IMAGE_MODES))
def test_image_modes_become_rgb_with_the_right_colours(tmp_path, case):
    image, name, left, right = IMAGE_MODES[case]
    options = {"lossless": True} if name.endswith(".webp") else {}
    path = _save(image, tmp_path / name, **options)

    (doc,) = PDFPageReader(image_format="PNG").load_data(path)
    page = pixels(doc)
    assert page.size == (8, 8)
    assert (doc.metadata["width"], doc.metadata["height"]) == (8, 8)
    assert doc.metadata["page_count"] == 1
    tolerance = 3 if name.endswith((".jpg", ".tiff")) else 0
    assert close_to(page.getpixel((1, 4)), left, tolerance), page.getpixel((1, 4))
    if right is not None:
        assert close_to(page.getpixel((6, 4)), right, tolerance), page.getpixel((6, 4))


def test_image_dpi_comes_from_the_file(tmp_path):
    with_dpi = _save(Image.new("RGB", (4, 4)), tmp_path / "with.png", dpi=(300, 300))
    without = _save(Image.new("RGB", (4, 4)), tmp_path / "without.png")
    reader = PDFPageReader()
    assert reader.load_data(with_dpi)[0].metadata["dpi"] == 300
    assert reader.load_data(without)[0].metadata["dpi"] is None


def test_multi_frame_tiff_is_one_page_per_frame(tmp_path):
    frames = [Image.new("RGB", (10 + n, 20), colour) for n, colour in enumerate([RED, GREEN, BLUE])]
    path = _save(frames[0], tmp_path / "scan.tiff", save_all=True, append_images=frames[1:])

    docs = PDFPageReader(image_format="PNG").load_data(path)
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2, 3]
    assert {doc.metadata["page_count"] for doc in docs} == {3}
    assert [pixels(doc).size for doc in docs] == [(10, 20), (11, 20), (12, 20)]
    assert [centre(doc) for doc in docs] == [RED, GREEN, BLUE]
    assert len({doc.id_ for doc in docs}) == 3

    ranged = PDFPageReader(first_page=2).load_data(path)
    assert [doc.metadata["page_number"] for doc in ranged] == [2, 3]
    assert PDFPageReader(first_page=2).count_pages(path) == 2


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), RED)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken in portrait
    path = _save(image, tmp_path / "photo.jpg", exif=exif)

    (doc,) = PDFPageReader().load_data(path)
    assert pixels(doc).size == (20, 40)


@pytest.mark.parametrize("side", [40, 50])  # 1.6x and 2.5x the limit (Pillow itself: 2x)
def test_image_over_the_decompression_bomb_limit_is_refused(tmp_path, monkeypatch, side):
    path = _save(Image.new("RGB", (side, side), RED), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(UnreadableDocumentError, match="decompression-bomb") as raised:
        PDFPageReader().load_data(path)
    assert "bomb.png" in str(raised.value)

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", side * side)  # at the limit: fine
    assert len(PDFPageReader().load_data(path)) == 1


def test_tiff_frame_over_the_limit_is_refused(tmp_path, monkeypatch):
    frames = [Image.new("RGB", (10, 10)), Image.new("RGB", (40, 40))]
    path = _save(frames[0], tmp_path / "mixed.tif", save_all=True, append_images=frames[1:])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(UnreadableDocumentError, match="40 x 40 image"):
        PDFPageReader().load_data(path)


# ----------------------------------------------------------------------- oversized PDF pages


def test_fit_dpi():
    assert fit_dpi(612, 792, 144, 89_478_485) == 144
    assert fit_dpi(612, 792, 144, None) == 144
    fitted = fit_dpi(14_400, 14_400, 144, 89_478_485)  # a 200-inch square page
    assert fitted == 47
    assert (14_400 * fitted / 72) ** 2 <= 89_478_485 < (14_400 * (fitted + 1) / 72) ** 2
    assert fit_dpi(720, 720, 144, 1) == 0


@settings(max_examples=300, deadline=None)
@given(
    width=st.floats(1, 20_000),
    height=st.floats(1, 20_000),
    dpi=st.integers(1, 600),
    budget=st.integers(1, 200_000_000),
)
def test_fit_dpi_is_the_highest_dpi_that_fits(width, height, dpi, budget):
    def bitmap(at_dpi):
        return math.ceil(width * at_dpi / 72) * math.ceil(height * at_dpi / 72)

    fitted = fit_dpi(width, height, dpi, budget)
    assert 0 <= fitted <= dpi
    if fitted:
        assert bitmap(fitted) <= budget
    if fitted < dpi:
        assert bitmap(fitted + 1) > budget


@pytest.mark.parametrize("renderer", RENDERERS)
def test_oversized_pdf_page_is_rendered_at_a_lower_dpi(tmp_path, monkeypatch, caplog, renderer):
    path = write_sized_pdf(tmp_path / "poster.pdf", [(72, 72), (720, 720), (72, 72)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # 720 pt at 144 dpi: 2.07 MP

    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader.pdf"):
        docs = PDFPageReader(renderer=renderer, dpi=144).load_data(path)
    assert [doc.metadata["dpi"] for doc in docs] == [144, 100, 144]
    assert [pixels(doc).size for doc in docs] == [(144, 144), (1000, 1000), (144, 144)]
    assert "page 2" in caplog.text and "100 dpi" in caplog.text


def test_pdf_page_too_large_even_at_1_dpi_is_refused(tmp_path, monkeypatch):
    path = write_sized_pdf(tmp_path / "huge.pdf", [(720, 720)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(UnreadableDocumentError, match="huge.pdf.*even at 1 dpi"):
        PDFPageReader().load_data(path)


# -------------------------------------------------------------------------------- streaming


def test_pypdfium2_streams_one_page_at_a_time_and_closes_everything(tmp_path, monkeypatch):
    path = write_text_pdf(tmp_path / "long.pdf", [f"page {n}" for n in range(1, 21)])
    rendered, closed_pages, closed_docs = [], [], []
    real_render, real_page_close = pdfium.PdfPage.render, pdfium.PdfPage.close
    real_doc_close = pdfium.PdfDocument.close

    def render(page, *args, **kwargs):
        rendered.append(1)
        return real_render(page, *args, **kwargs)

    def close_page(page, *args, **kwargs):
        closed_pages.append(1)
        return real_page_close(page, *args, **kwargs)

    def close_doc(doc, *args, **kwargs):
        closed_docs.append(1)
        return real_doc_close(doc, *args, **kwargs)

    monkeypatch.setattr(pdfium.PdfPage, "render", render)
    monkeypatch.setattr(pdfium.PdfPage, "close", close_page)
    monkeypatch.setattr(pdfium.PdfDocument, "close", close_doc)

    pages = PDFPageReader(dpi=10).lazy_load_data(path)
    first = next(pages)
    assert first.metadata["page_number"] == 1
    assert len(rendered) == 1  # the first page came out before the other 19 were rendered
    assert len(closed_pages) == 1  # and its page handle is already closed
    next(pages)
    assert len(rendered) == 2 and len(closed_pages) == 2

    pages.close()  # the caller stops early: the document is closed now, not at collection
    assert closed_docs == [1]


def test_pdf2image_renders_small_windows_never_the_whole_file(tmp_path, monkeypatch):
    path = write_text_pdf(tmp_path / "long.pdf", [f"page {n}" for n in range(1, 21)])
    windows = []
    real_convert = pdf2image.convert_from_path

    def convert(pdf_path, *args, **kwargs):
        windows.append((kwargs["first_page"], kwargs["last_page"]))
        return real_convert(pdf_path, *args, **kwargs)

    monkeypatch.setattr(pdf2image, "convert_from_path", convert)
    pages = PDFPageReader(renderer="pdf2image", dpi=10).lazy_load_data(path)
    assert next(pages).metadata["page_number"] == 1
    assert windows == [(1, 8)]  # only the first window was rendered for the first page

    rest = [doc.metadata["page_number"] for doc in pages]
    assert rest == list(range(2, 21))
    assert windows == [(1, 8), (9, 16), (17, 20)]

    windows.clear()
    PDFPageReader(renderer="pdf2image", dpi=10, pdf2image_window=3, first_page=5).load_data(path)
    assert windows == [(5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 20)]


# ------------------------------------------------------------------------------------ text


@pytest.mark.parametrize("renderer", RENDERERS)
def test_extract_text_puts_the_text_layer_in_the_document(text_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, extract_text=True, dpi=20).load_data(text_pdf)
    assert [doc.text for doc in docs] == ["Revenue 2023", "Net income 42\nCosts 7"]

    plain = PDFPageReader(renderer=renderer, dpi=20).load_data(text_pdf)
    assert [doc.text for doc in plain] == ["", ""]


def test_text_pdf_fixture_is_hand_written(tmp_path):
    data = build_pdf([PdfPageSpec(100, 100, text_content(["(tricky) \\ text"], size=10))])
    path = tmp_path / "escaped.pdf"
    path.write_bytes(data)
    (doc,) = PDFPageReader(extract_text=True, dpi=10).load_data(path)
    assert doc.text == "(tricky) \\ text"


def test_async_load(solid_pdf):
    docs = asyncio.run(PDFPageReader(dpi=10).aload_data(solid_pdf))
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2, 3]
