"""Files built to exhaust memory or time, written on the fly (issue 13): no binary is committed.

Plain functions returning bytes, no pytest, so ``benchmarks/hostile.py`` builds the same files
at their worst sizes while the tests build them small:

- pixel bombs: :func:`huge_media_box_pdf` (tiny PDFs with 200 x 200 inch pages),
  :func:`strip_png` (one huge side);
- render-time bombs: :func:`nested_forms_pdf` (Form XObjects each drawing the next 4 times);
- page-count bombs: :func:`repeated_page_pdf` (one page listed a million times),
  :func:`many_frames_tiff`;
- over-wide pages: :func:`wide_png` (wider than JPEG's 65,500 px);
- malformed files for fuzzing: :func:`flip_bytes`, :func:`huge_chunk_png`,
  :func:`broken_xref_pdf`.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from pdfs import PdfPageSpec, build_pdf, serialize_pdf
from PIL import Image

_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"


def _stream(data: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), entries) + data + b"\nendstream"


def huge_media_box_pdf(n_pages: int = 3, side_pt: float = 14_400) -> bytes:
    """``n_pages`` pages of ``side_pt`` x ``side_pt`` points (14,400 pt: 200 inches, PDF's
    largest page), each with a little drawing, in a file of a few hundred bytes.
    """
    content = b"0 0 1 rg 100 100 400 400 re f BT /F1 200 Tf 100 1000 Td (bomb) Tj ET"
    return build_pdf([PdfPageSpec(side_pt, side_pt, content)] * n_pages)


def nested_forms_pdf(levels: int = 12, fan_out: int = 4) -> bytes:
    """A one-page PDF of ``levels`` nested Form XObjects, each drawing the next ``fan_out``
    times: the innermost path is drawn ``fan_out ** levels`` times (4**12: 16.8 million) from a
    file of about 3 KB.
    """
    objects = [_CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
    first_form = 5
    objects.append(
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /X0 %d 0 R >> >> /Contents 4 0 R >>" % first_form
    )
    objects.append(_stream(b"q 0.5 0 0 0.5 50 50 cm /X0 Do Q"))
    placements = [b"q 0.5 0 0 0.5 %d %d cm /N Do Q" % (x, y) for x, y in ((0, 0), (300, 0))]
    placements += [b"q 0.5 0 0 0.5 %d %d cm /N Do Q" % (x, y) for x, y in ((0, 300), (300, 300))]
    for level in range(levels):
        form_entries = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] "
        if level + 1 < levels:
            draws = b" ".join(placements[i % 4] for i in range(fan_out))
            form_entries += b"/Resources << /XObject << /N %d 0 R >> >> " % (first_form + level + 1)
        else:
            draws = b"0 0 0 rg 10 10 500 500 re f 1 0 0 RG 0 0 m 600 700 l S"
        objects.append(_stream(draws, form_entries))
    return serialize_pdf(objects)


def repeated_page_pdf(n_kids: int = 1_000_000) -> bytes:
    """A PDF whose page tree lists the same page object ``n_kids`` times (about 6 bytes a
    listing: 6 MB for a million pages).
    """
    kids = b" ".join([b"3 0 R"] * n_kids)
    return serialize_pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n_kids,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        ]
    )


def many_frames_tiff(n_frames: int = 20_000, size: tuple[int, int] = (8, 8)) -> bytes:
    """A multi-page TIFF of ``n_frames`` white greyscale frames sharing one strip of pixels
    (written directly: Pillow's writer takes seconds per thousand frames).
    """
    width, height = size
    pixels = b"\xff" * (width * height)
    entries = [  # (tag, type SHORT=3 / LONG=4, value); the strip offset is filled in below
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(pixels)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    first_ifd = 8 + len(pixels)
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd) + pixels)
    for frame in range(n_frames):
        next_ifd = first_ifd + (frame + 1) * ifd_size if frame + 1 < n_frames else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", next_ifd)
    return bytes(out)


def strip_png(width: int = 1, height: int = 1_000_000) -> bytes:
    """A valid PNG of ``width`` x ``height`` white pixels: one side huge, under the pixel limit."""
    return encoded(Image.new("L", (width, height), 255), "PNG")


def wide_png(width: int = 70_000, height: int = 8) -> bytes:
    """A valid PNG wider than the JPEG encoder's limit of 65,500 pixels."""
    return encoded(Image.new("L", (width, height), 200), "PNG")


def multipage_tiff(n_frames: int = 4, size: tuple[int, int] = (48, 64)) -> bytes:
    """A small multi-page TIFF with differing noisy frames (the base of the TIFF fuzz)."""
    frames = [Image.effect_noise(size, 30 + 10 * i).convert("L") for i in range(n_frames)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_chunk_png(claimed_length: int = 0x7FFF_FFFF, body_bytes: int = 64) -> bytes:
    """A small PNG followed by an ancillary chunk that claims ``claimed_length`` bytes."""
    image = encoded(Image.new("RGB", (16, 16), (10, 200, 30)), "PNG")
    head, end = image[:-12], image[-12:]  # IEND is the last 12 bytes
    bogus = struct.pack(">I", claimed_length) + b"zTXt" + b"k\x00\x00" + b"\x00" * body_bytes
    return head + bogus + end


def text_chunk_png(n_chunks: int = 200, chunk_bytes: int = 1 << 20) -> bytes:
    """A 16 x 16 PNG carrying ``n_chunks`` compressed text chunks that inflate to
    ``chunk_bytes`` each.
    """
    image = encoded(Image.new("RGB", (16, 16), (10, 200, 30)), "PNG")
    head, end = image[:-12], image[-12:]
    body = b"Comment\x00\x00" + zlib.compress(b"A" * chunk_bytes, 9)
    return head + _chunk(b"zTXt", body) * n_chunks + end


def broken_xref_pdf(seed: int, n_pages: int = 3) -> bytes:
    """A small PDF whose cross-reference table or trailer is damaged in one of several ways,
    chosen by ``seed``.
    """
    rng = random.Random(seed)
    data = bytearray(build_pdf([PdfPageSpec(200, 200, b"0 0 1 rg 10 10 50 50 re f")] * n_pages))
    xref = data.rindex(b"xref")
    how = rng.randrange(5)
    if how == 0:  # offsets pointing anywhere
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(xref + 10, max(xref + 11, len(data) - 8))
            data[at] = ord(str(rng.randrange(10)))
    elif how == 1:  # startxref pointing past the end
        start = data.rindex(b"startxref")
        data[start:] = b"startxref\n%d\n%%%%EOF\n" % (len(data) * 7)
    elif how == 2:  # trailer cut off
        del data[data.rindex(b"trailer") :]
    elif how == 3:  # /Size and /Root lying
        data = bytearray(data.replace(b"/Root 1 0 R", b"/Root %d 0 R" % rng.randrange(2, 999)))
    else:  # random bytes over the xref table
        for at in range(xref, min(len(data), xref + rng.randint(8, 120))):
            data[at] = rng.randrange(256)
    return bytes(data)


def flip_bytes(data: bytes, seed: int, n_flips: int = 8, skip: int = 8) -> bytes:
    """``data`` with ``n_flips`` random bytes (after the first ``skip``) set to random values."""
    rng = random.Random(seed)
    mutated = bytearray(data)
    for _ in range(n_flips):
        at = rng.randrange(skip, len(mutated))
        mutated[at] = rng.randrange(256)
    return bytes(mutated)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()
