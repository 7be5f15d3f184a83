"""Image files as pages (reader/image_files.py): every Pillow mode to RGB, the file's dpi,
multi-frame TIFFs, EXIF rotation, and the decompression-bomb limit.
"""

from __future__ import annotations

import pytest
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader

from .page_pixels import BLUE, GREEN, RED, centre, close_to, pixels, save


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


def _saved_mode(tmp_path, case):
    image, name, _, _ = IMAGE_MODES[case]
    options = {"lossless": True} if name.endswith(".webp") else {}
    return save(image, tmp_path / name, **options)


@pytest.mark.parametrize("case", list(IMAGE_MODES))
def test_an_image_file_is_one_page_at_its_own_size(tmp_path, case):
    (doc,) = PDFPageReader(image_format="PNG").load_data(_saved_mode(tmp_path, case))
    assert pixels(doc).size == (8, 8)
    assert (doc.metadata["width"], doc.metadata["height"]) == (8, 8)
    assert doc.metadata["page_count"] == 1


@pytest.mark.parametrize("case", list(IMAGE_MODES))
def test_image_modes_become_rgb_with_the_right_colours(tmp_path, case):
    _, name, left, right = IMAGE_MODES[case]
    (doc,) = PDFPageReader(image_format="PNG").load_data(_saved_mode(tmp_path, case))
    page = pixels(doc)
    tolerance = 3 if name.endswith((".jpg", ".tiff")) else 0
    assert close_to(page.getpixel((1, 4)), left, tolerance), page.getpixel((1, 4))
    if right is not None:
        assert close_to(page.getpixel((6, 4)), right, tolerance), page.getpixel((6, 4))


def test_the_dpi_of_an_image_is_the_one_its_file_records(tmp_path):
    path = save(Image.new("RGB", (4, 4)), tmp_path / "with.png", dpi=(300, 300))
    assert PDFPageReader().load_data(path)[0].metadata["dpi"] == 300


def test_the_dpi_of_an_image_without_one_is_none(tmp_path):
    path = save(Image.new("RGB", (4, 4)), tmp_path / "without.png")
    assert PDFPageReader().load_data(path)[0].metadata["dpi"] is None


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), RED)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken in portrait
    path = save(image, tmp_path / "photo.jpg", exif=exif)

    (doc,) = PDFPageReader().load_data(path)
    assert pixels(doc).size == (20, 40)


# ------------------------------------------------------------------------ multi-frame TIFFs


@pytest.fixture
def scan_tiff(tmp_path):
    """A 3-frame TIFF: 10, 11 and 12 pixels wide, solid red, green and blue."""
    frames = [Image.new("RGB", (10 + n, 20), colour) for n, colour in enumerate([RED, GREEN, BLUE])]
    return save(frames[0], tmp_path / "scan.tiff", save_all=True, append_images=frames[1:])


def test_each_tiff_frame_is_a_page(scan_tiff):
    docs = PDFPageReader(image_format="PNG").load_data(scan_tiff)
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2, 3]


def test_the_page_count_of_a_tiff_is_its_frame_count(scan_tiff):
    docs = PDFPageReader(image_format="PNG").load_data(scan_tiff)
    assert {doc.metadata["page_count"] for doc in docs} == {3}


def test_each_tiff_frame_keeps_its_size(scan_tiff):
    docs = PDFPageReader(image_format="PNG").load_data(scan_tiff)
    assert [pixels(doc).size for doc in docs] == [(10, 20), (11, 20), (12, 20)]


def test_each_tiff_frame_keeps_its_colour(scan_tiff):
    docs = PDFPageReader(image_format="PNG").load_data(scan_tiff)
    assert [centre(doc) for doc in docs] == [RED, GREEN, BLUE]


def test_each_tiff_frame_has_its_own_page_id(scan_tiff):
    docs = PDFPageReader(image_format="PNG").load_data(scan_tiff)
    assert len({doc.id_ for doc in docs}) == 3


def test_the_page_range_selects_tiff_frames(scan_tiff):
    ranged = PDFPageReader(first_page=2).load_data(scan_tiff)
    assert [doc.metadata["page_number"] for doc in ranged] == [2, 3]


def test_count_pages_counts_the_tiff_frames_in_the_range(scan_tiff):
    assert PDFPageReader(first_page=2).count_pages(scan_tiff) == 2


# ------------------------------------------------------------------ decompression-bomb limit


@pytest.mark.parametrize("side", [40, 50])  # 1.6x and 2.5x the limit (Pillow itself: 2x)
def test_an_image_over_the_decompression_bomb_limit_is_refused(tmp_path, monkeypatch, side):
    path = save(Image.new("RGB", (side, side), RED), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(UnreadableDocumentError, match="decompression-bomb") as raised:
        PDFPageReader().load_data(path)
    assert "bomb.png" in str(raised.value)


@pytest.mark.parametrize("side", [40, 50])
def test_an_image_at_the_decompression_bomb_limit_is_read(tmp_path, monkeypatch, side):
    path = save(Image.new("RGB", (side, side), RED), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", side * side)
    assert len(PDFPageReader().load_data(path)) == 1


def test_a_tiff_frame_over_the_limit_is_refused(tmp_path, monkeypatch):
    frames = [Image.new("RGB", (10, 10)), Image.new("RGB", (40, 40))]
    path = save(frames[0], tmp_path / "mixed.tif", save_all=True, append_images=frames[1:])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(UnreadableDocumentError, match="40 x 40 image"):
        PDFPageReader().load_data(path)
