"""Test inputs made from scratch: hand-written PDFs (text, shapes, encryption) and odd images.

Plain functions, no pytest, so the benchmarks can build the same documents. The PDFs are
written byte by byte (catalog, page tree, one Helvetica font, a content stream per page and a
correct cross-reference table), which is enough for pdfium and poppler to render them and to
extract their text; nothing here needs reportlab, qpdf or a binary fixture.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Algorithm 3.2 of the PDF 1.7 reference pads every password with these 32 bytes.
_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


@dataclass(frozen=True)
class PdfPageSpec:
    """One page of a hand-written PDF: its size in points and its content stream."""

    width_pt: float = 612.0
    height_pt: float = 792.0
    content: bytes = b""


def build_pdf(
    pages: Sequence[PdfPageSpec],
    *,
    encrypt_dict: bytes | None = None,
    file_id: bytes | None = None,
    missing_pages: Collection[int] = (),
) -> bytes:
    """Return the bytes of a PDF with ``pages``; every page can use the font ``/F1`` (Helvetica).

    ``encrypt_dict`` (the body of an ``/Encrypt`` dictionary) and ``file_id`` make an encrypted
    file; content streams are then written as given, so keep them empty for encrypted files.
    ``missing_pages`` (1-based) makes the page tree point those pages at an object the file
    lacks, as in a partly overwritten file: it still opens and counts every page.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree's number is known
    page_tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for spec in pages:
        entries = [
            b"/Type /Page",
            b"/Parent %d 0 R" % page_tree,
            b"/MediaBox [0 0 %s %s]" % (_num(spec.width_pt), _num(spec.height_pt)),
            b"/Resources << /Font << /F1 %d 0 R >> >>" % font,
        ]
        if spec.content:
            stream = add(
                b"<< /Length %d >>\nstream\n%s\nendstream" % (len(spec.content), spec.content)
            )
            entries.append(b"/Contents %d 0 R" % stream)
        kids.append(add(b"<< " + b" ".join(entries) + b" >>"))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % page_tree
    objects[page_tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(
            b"%d 0 R" % (999 if number in missing_pages else kid)
            for number, kid in enumerate(kids, start=1)
        ),
        len(kids),
    )
    encrypt = add(encrypt_dict) if encrypt_dict is not None else None

    trailer_extra = b""
    if encrypt is not None:
        trailer_extra += b" /Encrypt %d 0 R" % encrypt
    if file_id is not None:
        trailer_extra += b" /ID [<%s> <%s>]" % (file_id.hex().encode(), file_id.hex().encode())
    return serialize_pdf(objects, catalog, trailer_extra, header=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")


def serialize_pdf(
    objects: list[bytes], root: int = 1, trailer_extra: bytes = b"", header: bytes = b"%PDF-1.4\n"
) -> bytes:
    """A PDF of the given object bodies (numbered from 1) with a correct xref table.

    ``root`` is the catalog's object number; ``trailer_extra`` is added to the trailer
    dictionary (e.g. ``b" /Encrypt 5 0 R"``).
    """
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        trailer_extra,
        xref_at,
    )
    return bytes(out)


def _num(value: float) -> bytes:
    return (b"%d" % value) if float(value).is_integer() else (b"%.3f" % value)


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def text_content(
    lines: Sequence[str],
    *,
    size: int = 24,
    x: float = 72,
    top: float = 720,
    leading: float | None = None,
) -> bytes:
    """A content stream drawing ``lines`` in Helvetica, top to bottom, from ``(x, top)``."""
    leading = leading if leading is not None else size * 1.25
    ops = [b"BT /F1 %d Tf %s TL %s %s Td" % (size, _num(leading), _num(x), _num(top))]
    for line in lines:
        ops.append(_pdf_string(line) + b" Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def write_text_pdf(
    path: Path,
    page_texts: Sequence[str | Sequence[str]],
    *,
    width_pt: float = 612,
    height_pt: float = 792,
    size: int = 24,
) -> Path:
    """Write a PDF with one page per entry of ``page_texts`` (a line or a list of lines)."""
    pages = []
    for text in page_texts:
        lines = [text] if isinstance(text, str) else list(text)
        top = height_pt - 72 if height_pt > 144 else height_pt / 2
        pages.append(PdfPageSpec(width_pt, height_pt, text_content(lines, size=size, top=top)))
    path.write_bytes(build_pdf(pages))
    return path


def write_numbered_pdf(path: Path, n_pages: int, tag: str | None = None) -> Path:
    """An ``n_pages`` PDF of 200 x 200 pt pages reading "<tag> page <n>" (tag: the file's stem),
    so files differ by name or tag; creates missing folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = tag or path.stem
    return write_text_pdf(
        path, [f"{tag} page {n}" for n in range(1, n_pages + 1)], width_pt=200, height_pt=200
    )


def page_ids_of(path: Path, n_pages: int) -> set[str]:
    """The page ids the reader gives the first ``n_pages`` pages of the file at ``path``."""
    from llama_index_vlm.pages import doc_id_for_file

    doc_id = doc_id_for_file(path)
    return {f"{doc_id}-p{n}" for n in range(1, n_pages + 1)}


def write_sized_pdf(path: Path, sizes_pt: Sequence[tuple[float, float]]) -> Path:
    """Write a PDF whose pages have the given (width, height) in points and a black square."""
    pages = [
        PdfPageSpec(w, h, b"0 0 0 rg %s %s 10 10 re f" % (_num(w / 2), _num(h / 2)))
        for w, h in sizes_pt
    ]
    path.write_bytes(build_pdf(pages))
    return path


def report_page_content(
    page_number: int, *, width_pt: float = 612, height_pt: float = 792, seed: int = 0
) -> bytes:
    """A page that looks like a report: a heading, paragraphs of words, a bar chart, a table.

    Every page differs (words, bar heights, table values), so image encoders see realistic,
    non-repeating content.
    """
    rng = random.Random(seed * 100_003 + page_number)
    words = (
        "revenue profit margin quarter growth operating income segment total cost "
        "net assets cash flow forecast region sales units share equity debt ratio"
    ).split()
    ops = [
        b"BT /F1 20 Tf 72 %s Td" % _num(height_pt - 72),
        _pdf_string(f"Section {page_number}: {rng.choice(words).title()} overview") + b" Tj ET",
    ]
    y = height_pt - 110
    for _ in range(rng.randint(8, 14)):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(8, 13)))
        ops.append(b"BT /F1 10 Tf 72 %s Td %s Tj ET" % (_num(y), _pdf_string(line)))
        y -= 14
    # A bar chart: filled rectangles of varying heights and greys.
    base = y - 150
    for bar in range(8):
        grey = rng.uniform(0.2, 0.8)
        height = rng.uniform(20, 130)
        ops.append(
            b"%.2f %.2f %.2f rg %s %s 30 %s re f"
            % (grey, grey * 0.8, 1 - grey, _num(90 + bar * 50), _num(base), _num(round(height, 1)))
        )
    ops.append(b"0 0 0 RG 1 w 80 %s m 500 %s l S" % (_num(base), _num(base)))
    # A table: ruled grid with numbers.
    top = base - 30
    for row in range(6):
        row_y = top - row * 18
        ops.append(b"0.5 w 72 %s m 540 %s l S" % (_num(row_y), _num(row_y)))
        cells = [f"{rng.uniform(0, 9999):,.1f}" for _ in range(5)]
        for col, cell in enumerate(cells):
            ops.append(
                b"BT /F1 9 Tf %s %s Td %s Tj ET"
                % (_num(78 + col * 94), _num(row_y - 13), _pdf_string(cell))
            )
    ops.append(
        b"BT /F1 8 Tf %s 36 Td %s Tj ET" % (_num(width_pt / 2 - 10), _pdf_string(str(page_number)))
    )
    return b"\n".join(ops)


def write_report_pdf(path: Path, n_pages: int, *, seed: int = 0) -> Path:
    """Write an ``n_pages`` US-letter PDF of :func:`report_page_content` pages."""
    pages = [
        PdfPageSpec(612, 792, report_page_content(n, seed=seed)) for n in range(1, n_pages + 1)
    ]
    path.write_bytes(build_pdf(pages))
    return path


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def write_encrypted_pdf(
    path: Path, user_password: str = "user", owner_password: str = "owner"
) -> Path:
    """Write a one-page PDF encrypted with the standard handler (RC4 40-bit, revision 2).

    It opens only with ``user_password`` (pypdfium2: ``PdfDocument(path, password=...)``), like
    any password-protected PDF a user may drop into a folder. The page has no content stream,
    so no object besides the /Encrypt dictionary's own strings needs encrypting.
    """

    def padded(password: str) -> bytes:
        return (password.encode("latin-1") + _PASSWORD_PAD)[:32]

    permissions = -4
    file_id = hashlib.md5(str(path).encode()).digest()
    owner_key = hashlib.md5(padded(owner_password)).digest()[:5]
    owner_entry = _rc4(owner_key, padded(user_password))
    file_key = hashlib.md5(
        padded(user_password)
        + owner_entry
        + permissions.to_bytes(4, "little", signed=True)
        + file_id
    ).digest()[:5]
    user_entry = _rc4(file_key, _PASSWORD_PAD)
    encrypt_dict = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
        owner_entry.hex().encode(),
        user_entry.hex().encode(),
        permissions,
    )
    path.write_bytes(build_pdf([PdfPageSpec()], encrypt_dict=encrypt_dict, file_id=file_id))
    return path


def write_truncated_pdf(path: Path, n_pages: int = 6, keep: float = 0.5) -> Path:
    """Write a real multi-page PDF cut to its first ``keep`` fraction of bytes (a partial copy)."""
    full = build_pdf(
        [
            PdfPageSpec(200, 200, text_content([f"page {n}"], size=12, top=100))
            for n in range(1, n_pages + 1)
        ]
    )
    path.write_bytes(full[: int(len(full) * keep)])
    return path


def write_image_pdf(path: Path, n_pages: int, size_px: tuple[int, int] = (72, 144)) -> Path:
    """Write an ``n_pages`` PDF with Pillow, one solid-colour page per entry, at 72 dpi."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 0)]
    frames = [Image.new("RGB", size_px, colours[n % len(colours)]) for n in range(n_pages)]
    frames[0].save(path, "PDF", save_all=True, append_images=frames[1:], resolution=72)
    return path


def write_damaged_page_pdf(path: Path, n_pages: int = 3, damaged_page: int = 2) -> Path:
    """Write an ``n_pages`` PDF whose page ``damaged_page`` cannot be loaded (object missing)."""
    pages = [
        PdfPageSpec(200, 200, text_content([f"page {n}"], size=12, top=100))
        for n in range(1, n_pages + 1)
    ]
    path.write_bytes(build_pdf(pages, missing_pages={damaged_page}))
    return path
