"""Hostile and broken inputs, written on the fly: nothing binary is committed.

Plain functions and tables, no pytest, in the style of ``tests/pdfs.py``:

- :data:`BAD_FILES`: files a user may drop into a shared folder (truncated, encrypted, empty and
  mislabelled PDFs, page trees that loop, decompression bombs, lying headers...), each with the
  reason the reader must give, or ``None`` when it must simply read the file.
- :data:`HOSTILE_STRINGS`: values built to break out of a SQL string literal or to trip text
  handling (quotes, backslashes, comments, NUL, lone surrogates, bidi controls...).
- :data:`HOSTILE_QUERIES`: query strings, each with the error it must raise or ``None``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from pdfs import (
    PdfPageSpec,
    build_pdf,
    serialize_pdf,
    write_encrypted_pdf,
    write_truncated_pdf,
)
from PIL import Image

from llama_index_vlm.errors import ContextWindowExceededError, EmptyInputError

_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"


def _one_page(page: bytes, *more: bytes) -> bytes:
    return serialize_pdf([_CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", page, *more])


def _stream(data: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), entries) + data + b"\nendstream"


def page_tree_loop() -> bytes:
    """The page tree lists itself as one of its kids."""
    return serialize_pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
        ]
    )


def deep_page_tree(depth: int = 2000) -> bytes:
    """A page hidden under ``depth`` nested page-tree nodes (a stack-overflow attempt)."""
    nodes = [b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (n + 3) for n in range(depth)]
    return serialize_pdf([_CATALOG, *nodes, b"<< /Type /Page /MediaBox [0 0 100 100] >>"])


def lying_page_count() -> bytes:
    """One page, but the page tree claims a billion (a reader trusting /Count would loop)."""
    return serialize_pdf(
        [
            _CATALOG,
            b"<< /Type /Pages /Kids [3 0 R] /Count 1000000000 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
        ]
    )


def content_stream_bomb(megabytes: int = 100) -> bytes:
    """A page whose content stream inflates from about 100 KB to ``megabytes`` of spaces."""
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b" " * (1 << 20)) for _ in range(megabytes))
    data += compressor.flush()
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents 4 0 R >>"
    return _one_page(page, _stream(data, b"/Filter /FlateDecode "))


def image_xobject_bomb() -> bytes:
    """A page drawing an image that claims 100000 x 100000 pixels (10 GB once decoded)."""
    data = zlib.compress(b"\x00" * 1_000_000, 9)
    image = _stream(
        data,
        b"/Type /XObject /Subtype /Image /Width 100000 /Height 100000 /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode ",
    )
    content = b"q 100 0 0 100 0 0 cm /Im1 Do Q"
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] "
        b"/Resources << /XObject << /Im1 4 0 R >> >> /Contents 5 0 R >>"
    )
    return _one_page(page, image, _stream(content))


def nonsense_media_box() -> bytes:
    """A page box of NaN and an overflowing number (PDFium falls back to US letter)."""
    return _one_page(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 nan 1e400] >>")


def no_pages() -> bytes:
    return build_pdf([])


def empty_pages(n_pages: int = 3000) -> bytes:
    """``n_pages`` US-letter pages with nothing on them."""
    return build_pdf([PdfPageSpec()] * n_pages)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but whose data is 100 zero bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int) -> bytes:
    """A BMP header claiming ``width`` x ``height`` 24-bit pixels, and no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + info


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.effect_noise(size, 40).convert("RGB")


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return write


def _truncated(keep: float) -> Callable[[Path], None]:
    return lambda path: write_truncated_pdf(path, keep=keep) and None


def _cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


#: name -> (file name, writer, reason the reader gives, or None when the file must be read).
BAD_FILES: dict[str, tuple[str, Callable[[Path], None], str | None]] = {
    # PDFs that cannot be read.
    "zero-byte pdf": ("empty.pdf", _bytes(b""), "empty file (0 bytes)"),
    "pdf header only": ("header.pdf", _bytes(b"%PDF-1.7\n"), "corrupted or truncated"),
    "pdf cut at 50%": ("half.pdf", _truncated(0.5), "corrupted or truncated"),
    "pdf cut at 90%": ("most.pdf", _truncated(0.9), "corrupted or truncated"),
    "encrypted pdf": ("locked.pdf", lambda p: write_encrypted_pdf(p) and None, "password"),
    "pdf header then garbage": (
        "garbage.pdf",
        _bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40),
        "corrupted or truncated",
    ),
    "pdf without pages": ("nopages.pdf", _bytes(no_pages), "corrupted or truncated"),
    "page tree loop": ("loop.pdf", _bytes(page_tree_loop), "page 2 of 2 is missing or damaged"),
    "page tree 2000 deep": ("deep.pdf", _bytes(deep_page_tree), "is missing or damaged"),
    "page of 1e6 x 1e6 pt": (
        "vast.pdf",
        _bytes(lambda: build_pdf([PdfPageSpec(1e6, 1e6)])),
        "exceeds the pixel budget",
    ),
    # Mislabelled files.
    "text named .pdf": ("notes.pdf", _bytes(b"just some text\n" * 50), "not a PDF"),
    "png named .pdf": ("picture.pdf", _bytes(lambda: encoded(_noise(), "PNG")), "not a PDF"),
    "zip named .pdf": ("archive.pdf", _bytes(b"PK\x03\x04" + b"\x00" * 200), "not a PDF"),
    "html named .pdf": ("page.pdf", _bytes(b"<!doctype html><html>" * 30), "not a PDF"),
    "pdf named .png": ("scan.png", _bytes(lambda: build_pdf([PdfPageSpec()])), "not a valid png"),
    "text named .jpg": ("photo.jpg", _bytes(b"not a jpeg"), "not a valid jpg"),
    # Broken and bomb images.
    "zero-byte png": ("empty.png", _bytes(b""), "empty file (0 bytes)"),
    "png cut short": (
        "cut.png",
        _bytes(lambda: _cut(encoded(_noise(), "PNG"), 0.3)),
        "truncated or corrupted",
    ),
    "jpeg cut short": (
        "cut.jpg",
        _bytes(lambda: _cut(encoded(_noise((200, 200)), "JPEG"), 0.5)),
        "truncated or corrupted",
    ),
    "png claiming 100000 x 100000": (
        "bomb.png",
        _bytes(lambda: png_header(100_000, 100_000)),
        "decompression-bomb",
    ),
    "png just over the pixel limit": (
        "bomb2.png",
        _bytes(lambda: png_header(10_000, 10_000)),
        "decompression-bomb",
    ),
    "bmp claiming 2**30 x 2**30": (
        "bomb.bmp",
        _bytes(lambda: bmp_header(1 << 30, 1 << 30)),
        "decompression-bomb",
    ),
    "bmp with negative size": ("odd.bmp", _bytes(lambda: bmp_header(-5, -(1 << 31))), "bomb"),
    "webp garbage": ("noise.webp", _bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x17" * 64), ""),
    "tiff garbage": ("noise.tif", _bytes(b"II*\x00" + b"\xff" * 64), ""),
    # Special files: must fail at once, never block on read.
    "named pipe .pdf": ("pipe.pdf", _fifo, "empty file (0 bytes)"),
    "/dev/zero as .pdf": ("zeros.pdf", _symlink("/dev/zero"), "empty file (0 bytes)"),
    "/dev/urandom as .png": ("random.png", _symlink("/dev/urandom"), "empty file (0 bytes)"),
    "symlink to itself": ("self.pdf", _symlink("self.pdf"), "dangling symbolic link"),
    "dangling symlink": ("gone.pdf", _symlink("/nonexistent/gone.pdf"), "dangling symbolic link"),
    # Odd but readable: these must be indexed, not refused.
    "pdf cut at 99% (xref lost)": ("nearly.pdf", _truncated(0.99), None),
    "page count lie (/Count 1e9)": ("liar.pdf", _bytes(lying_page_count), None),
    "100 MB content stream bomb": ("stream.pdf", _bytes(content_stream_bomb), None),
    "image claiming 100000 x 100000 in a pdf": ("xobject.pdf", _bytes(image_xobject_bomb), None),
    "NaN page box": ("nan.pdf", _bytes(nonsense_media_box), None),
    "zero-width page box": ("flat.pdf", _bytes(lambda: build_pdf([PdfPageSpec(0, 100)])), None),
    "jpeg named .png": ("really_jpeg.png", _bytes(lambda: encoded(_noise(), "JPEG")), None),
    "gif named .png": (
        "really_gif.png",
        _bytes(lambda: encoded(_noise().convert("P"), "GIF")),
        None,
    ),
    "one-pixel image": ("dot.png", _bytes(lambda: encoded(Image.new("RGB", (1, 1)), "PNG")), None),
    "1 x 5000 sliver": (
        "sliver.png",
        _bytes(lambda: encoded(Image.new("L", (1, 5000), 0), "PNG")),
        None,
    ),
}

#: Values meant to escape a SQL string literal or trip text handling.
HOSTILE_STRINGS = [
    "x' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE pages; --",
    "x\\' OR 1=1 --",
    "\\",
    "'",
    "''",
    '"',
    "%",
    "_",
    "*",
    "/* comment */",
    "*/ OR TRUE /*",
    "-- ",
    ";",
    "a\x00b",
    "\x00",
    "\u2019 OR \u2018x\u2019=\u2018x",
    "\uff07 OR \uff071\uff07=\uff071",
    "\u02bc",
    "\u202e' OR '1'='1",
    "\ufeff",
    "line\nbreak' OR '1'='1",
    "\r\n",
    "\x1b[31m",
    '$["doc_id"]',
    "') OR ('1'='1",
    "page_id",
    "NULL",
    "a\udcffb",
]

#: Query strings -> the error they must raise, or None when they must be answered.
HOSTILE_QUERIES: dict[str, tuple[str, type[Exception] | None]] = {
    "empty": ("", EmptyInputError),
    "spaces": ("   ", EmptyInputError),
    "whitespace of all kinds": ("\t\n\r\x0b\x0c\x85\u00a0\u3000\u2028", EmptyInputError),
    "100k characters": ("x" * 100_000, ContextWindowExceededError),
    "100k characters of words": ("revenue " * 12_500, ContextWindowExceededError),
    "NUL": ("\x00", None),
    "NULs inside": ("rev\x00enue\x00", None),
    "control characters": ("".join(map(chr, range(1, 32))) + "\x7f", None),
    "ANSI escapes": ("\x1b[31mrevenue\x1b[0m", None),
    "bidi override": ("\u202erevenue\u202c", None),
    "zero-width only": ("\u200b\u200c\u200d", None),
    "byte-order mark": ("\ufeffrevenue", None),
    "lone surrogate": ("reve\udcffnue", None),
    "emoji": ("\U0001f4c8" * 50, None),
    "SQL in a query": ("' OR 1=1; DROP TABLE pages; --", None),
}
