"""PDFPageReader: PDFs, images and folders of them -> one LlamaIndex ImageDocument per page.

Each page becomes an :class:`~llama_index.core.schema.ImageDocument` whose image (JPEG or PNG
bytes, base64) lives in the document itself, so it resolves without the original file, and
whose ``id_`` is the page's stable id (:func:`page_id_for`).

Errors are per file: :meth:`PDFPageReader.read_file` raises
:class:`~llama_index_vlm.errors.UnreadableDocumentError` (naming the file and the reason) for a
file it cannot read, so a caller that loops over :meth:`PDFPageReader.list_files` can record the
failure and go on with the next file. ``load_data`` raises on the first bad file by default;
``on_error="skip"`` logs it and goes on.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import ImageDocument
from PIL import Image, ImageOps, UnidentifiedImageError

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.images import encode_image, mimetype_of, to_rgb
from llama_index_vlm.pages import HIDDEN_METADATA_KEYS, doc_id_for_file, os_reason, page_id_for
from llama_index_vlm.rendering import (
    RenderedPage,
    open_pdf,
    pixel_budget,
    plan_pdf,
    render_pdfium,
    render_poppler,
)

logger = logging.getLogger(__name__)

PDF_EXTENSIONS = frozenset({".pdf"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
SUPPORTED_EXTENSIONS = PDF_EXTENSIONS | IMAGE_EXTENSIONS


class PDFPageReader(BasePydanticReader):
    """Read PDFs and page images as one :class:`ImageDocument` per page.

    PDF pages are rendered at ``dpi`` with pypdfium2 (default; pip-only) or pdf2image
    (poppler), one page (pypdfium2) or one small window of pages (pdf2image) at a time, so
    memory stays bounded whatever the file's length. Image files (png, jpg/jpeg, webp,
    tif/tiff, bmp) are read at their own resolution; each frame of a multi-frame TIFF is a
    page. Folders are read recursively in sorted order, skipping hidden files and folders.

    Every document has ``id_ == metadata["page_id"]`` and the metadata ``doc_id``, ``page_id``,
    ``file_path`` (absolute), ``file_name``, ``page_number`` (1-based), ``page_count`` (pages in
    the whole file), ``width`` and ``height`` (pixels of the stored image) and ``dpi`` (the dpi
    the page was rendered at; for image files, the resolution the file records, or ``None``).
    In ``file_path`` and ``file_name``, the bytes of a file name that is not valid UTF-8 are
    written as ``\\xNN`` escapes, so the metadata is always valid Unicode.

    Example:
        >>> reader = PDFPageReader(dpi=144)
        >>> docs = reader.load_data("reports/")                      # doctest: +SKIP
        >>> docs[0].metadata["file_name"], docs[0].metadata["page_number"]  # doctest: +SKIP
        ('annual.pdf', 1)

    Per-file use (one bad file does not stop the others)::

        for path in reader.list_files(["reports/", "scan.tiff"]):
            try:
                for doc in reader.read_file(path):
                    ...
            except UnreadableDocumentError as error:
                print("failed:", error.path, error.reason)

    Limits: an image file over Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is refused; a PDF page that would render over it is
    rendered at the highest dpi that fits (its ``dpi`` metadata says which) with a warning.
    """

    dpi: int = Field(default=144, gt=0, description="Resolution PDF pages are rendered at.")
    renderer: Literal["pypdfium2", "pdf2image"] = Field(
        default="pypdfium2",
        description=(
            "PDF renderer: 'pypdfium2' (default, fastest, pip-only) or 'pdf2image' (poppler's "
            "pdftoppm, which must be installed)."
        ),
    )
    image_format: Literal["JPEG", "PNG"] = Field(
        default="JPEG",
        description=(
            "Format the page images are stored in. JPEG (default) encodes a 144 dpi letter page "
            "in about 5 ms; PNG is lossless but about 5x slower to encode."
        ),
    )
    image_quality: int = Field(
        default=90, ge=1, le=100, description="JPEG quality (1-100); ignored for PNG."
    )
    first_page: int = Field(
        default=1, ge=1, description="First page (1-based, inclusive) read from each file."
    )
    last_page: int | None = Field(
        default=None,
        ge=1,
        description="Last page (1-based, inclusive) read from each file; None reads to the end.",
    )
    extract_text: bool = Field(
        default=False,
        description="Put each PDF page's text layer into the document's text (empty for scans).",
    )
    pdf2image_window: int = Field(
        default=8,
        ge=1,
        description="Pages rendered per pdftoppm call with renderer='pdf2image'.",
    )

    @field_validator("image_format", mode="before")
    @classmethod
    def _normalise_image_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.upper()
            return "JPEG" if value == "JPG" else value
        return value

    @model_validator(mode="after")
    def _check_page_range(self) -> PDFPageReader:
        if self.last_page is not None and self.last_page < self.first_page:
            raise ValueError(
                f"last_page ({self.last_page}) must not be before first_page ({self.first_page})"
            )
        return self

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this reader under."""
        return "PDFPageReader"

    # ----------------------------------------------------------------------------- loading

    def lazy_load_data(
        self,
        path_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        doc_id: str | None = None,
        extra_info: dict[str, Any] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> Iterator[ImageDocument]:
        """Yield one :class:`ImageDocument` per page of every file under ``path_or_paths``.

        Args:
            path_or_paths: a file, a folder, or a list of them.
            doc_id: the document id to use instead of the file's sha256; only when exactly one
                file is read.
            extra_info: metadata added to every document (the reader's own keys win).
            on_error: ``"raise"`` (default) raises :class:`UnreadableDocumentError` at the first
                file that cannot be read; ``"skip"`` logs a warning naming the file and the
                reason and goes on with the next file. Files are checked before their first
                page is yielded; only a page failing to render later (rare: the page tree
                was checked) leaves that file's earlier pages yielded, with the warning.

        A file whose bytes equal an earlier file's in the same call is skipped with a warning:
        it would have the same ``doc_id`` and so the same page ids.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        path_or_paths = _as_path_list(path_or_paths)
        files = self.list_files(path_or_paths)
        if not files:
            raise EmptyInputError(
                f"no PDF or image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) found in "
                f"{_describe(path_or_paths)}"
            )
        if doc_id is not None and len(files) > 1:
            raise ValueError(
                f"doc_id can name one file, but {len(files)} files were found; leave it out to "
                "use each file's sha256"
            )
        seen_doc_ids: dict[str, Path] = {}
        for path in files:
            try:
                # Check the path first, so an unsupported or empty file is not hashed first.
                self._check_path(path)
                file_doc_id = doc_id if doc_id is not None else doc_id_for_file(path)
                if file_doc_id in seen_doc_ids:
                    logger.warning(
                        "skipping %s: same bytes as %s (doc_id %s)",
                        path,
                        seen_doc_ids[file_doc_id],
                        file_doc_id,
                    )
                    continue
                seen_doc_ids[file_doc_id] = path
                yield from self.read_file(path, doc_id=file_doc_id, extra_info=extra_info)
            except UnreadableDocumentError as error:
                if on_error == "raise":
                    raise
                logger.warning("skipping %s: %s", error.path, error.reason)

    def load_data(
        self,
        path_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        doc_id: str | None = None,
        extra_info: dict[str, Any] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> list[ImageDocument]:
        """Read every page under ``path_or_paths`` into a list; see :meth:`lazy_load_data`.

        Each page holds its encoded image (about 200 KB as JPEG at 144 dpi), so prefer
        :meth:`lazy_load_data` or :meth:`read_file` for thousands of pages.
        """
        return list(
            self.lazy_load_data(
                path_or_paths, doc_id=doc_id, extra_info=extra_info, on_error=on_error
            )
        )

    # ------------------------------------------------------------------- per-file hooks

    def list_files(
        self, path_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
    ) -> list[Path]:
        """Expand folders into the files :meth:`read_file` would read, as absolute paths.

        Folders are walked recursively in sorted order (by name at each level), skipping hidden
        (dot) files and folders, files of other types and dangling links; a folder reached
        twice through symbolic links is walked once, so link loops end. Paths given explicitly
        are kept whatever they are (missing, hidden, unsupported type) so that
        :meth:`read_file` reports each one as a failure of that file. A file reached twice
        (e.g. listed and inside a listed folder) is kept once, at its first place.
        """
        files: list[Path] = []
        seen_real: set[str] = set()
        for given in _as_path_list(path_or_paths):
            path = Path(os.path.abspath(os.fspath(given)))
            found = _walk(path) if path.is_dir() else [path]
            for file in found:
                real = os.path.realpath(file)
                if real not in seen_real:
                    seen_real.add(real)
                    files.append(file)
        return files

    def count_pages(self, path: str | os.PathLike[str]) -> int:
        """How many documents :meth:`read_file` would yield for ``path``, without rendering.

        Raises the :class:`UnreadableDocumentError` :meth:`read_file` would, except for
        failures only decoding shows (an image whose pixel data is cut short). Cheap: it reads
        a PDF's page tree and an image's header, so it suits a progress bar's total.
        """
        path = self._check_path(path)
        if path.suffix.lower() in PDF_EXTENSIONS:
            pdf = open_pdf(path)
            try:
                layout = plan_pdf(
                    pdf, path, dpi=self.dpi, first_page=self.first_page, last_page=self.last_page
                )
            finally:
                pdf.close()
            return len(layout.page_numbers())
        with self._open_image(path) as image:
            frames = range(self.first_page, min(self._frame_count(image), self._last) + 1)
            return len(frames)

    def read_file(
        self,
        path: str | os.PathLike[str],
        doc_id: str | None = None,
        extra_info: dict[str, Any] | None = None,
    ) -> Iterator[ImageDocument]:
        """Yield the pages of one file as documents, or raise :class:`UnreadableDocumentError`.

        The per-file hook for ingestion: the error names the file (``error.path``) and says why
        (``error.reason``): a missing path, a folder, an unsupported file type, an empty file, a
        text file named ``.pdf``, a corrupted, truncated or encrypted PDF, a damaged page, an
        unreadable image or one over Pillow's decompression-bomb limit.

        A PDF is checked before its first page is yielded: it opens, needs no password, and
        every page in the range has a readable page object and size. A page that still fails
        to render raises, naming the page, after the earlier pages were yielded: treat the
        whole file as failed (do not keep those pages). ``doc_id`` defaults to the sha256 of
        the file's bytes (:func:`doc_id_for_file`).
        """
        if doc_id is not None and (not isinstance(doc_id, str) or not doc_id):
            raise ValueError(f"doc_id must be a non-empty string, not {doc_id!r}")
        path = self._check_path(path)
        if path.suffix.lower() in PDF_EXTENSIONS:
            pages = self._pdf_pages(path)
        else:
            pages = self._image_pages(path)
        try:
            # The first page (and so the file's validation) comes before hashing, so a bad
            # file fails before being read a second time.
            first = next(pages, None)
            if first is None:
                return
            if doc_id is None:
                doc_id = doc_id_for_file(path)
            yield self._document(first, path, doc_id, extra_info)
            for page in pages:
                yield self._document(page, path, doc_id, extra_info)
        finally:
            # Close the renderer now (PDF document, open image), also when the caller stops
            # early, instead of whenever the generator is collected.
            pages.close()

    # ---------------------------------------------------------------------------- internals

    @property
    def _last(self) -> int:
        return self.last_page if self.last_page is not None else 2**31

    def _check_path(self, path: str | os.PathLike[str]) -> Path:
        path = Path(os.path.abspath(os.fspath(path)))
        if not path.exists():
            reason = "dangling symbolic link" if path.is_symlink() else "no such file or directory"
            raise UnreadableDocumentError(str(path), reason)
        if path.is_dir():
            raise UnreadableDocumentError(
                str(path), "is a directory; pass it to list_files() or load_data() instead"
            )
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            raise UnreadableDocumentError(
                str(path),
                f"unsupported file type {suffix or '(no extension)'!r}; PDFPageReader reads "
                f"{', '.join(sorted(SUPPORTED_EXTENSIONS))}",
            )
        try:
            size = path.stat().st_size
        except OSError as error:
            raise UnreadableDocumentError(str(path), os_reason(error)) from error
        if size == 0:
            raise UnreadableDocumentError(str(path), "empty file (0 bytes)")
        return path

    def _pdf_pages(self, path: Path) -> Iterator[RenderedPage]:
        options = dict(
            dpi=self.dpi,
            first_page=self.first_page,
            last_page=self.last_page,
            extract_text=self.extract_text,
        )
        try:
            if self.renderer == "pdf2image":
                yield from render_poppler(path, window=self.pdf2image_window, **options)
            else:
                yield from render_pdfium(path, **options)
        except OSError as error:  # the file vanished or became unreadable mid-way
            raise UnreadableDocumentError(str(path), os_reason(error)) from error

    def _open_image(self, path: Path) -> Image.Image:
        """Open an image lazily (header only), refusing decompression bombs."""
        try:
            with warnings.catch_warnings():
                # We refuse anything over the budget ourselves, below, so Pillow's warning for
                # images between 1x and 2x the limit would only be noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
        except Image.DecompressionBombError as error:
            raise UnreadableDocumentError(str(path), _bomb_reason(None)) from error
        except UnidentifiedImageError as error:
            raise UnreadableDocumentError(
                str(path),
                f"not a valid {path.suffix.lower().lstrip('.')} image (Pillow cannot identify it)",
            ) from error
        except OSError as error:
            raise UnreadableDocumentError(str(path), os_reason(error)) from error
        try:
            _check_bomb(path, image)
        except UnreadableDocumentError:
            image.close()
            raise
        return image

    @staticmethod
    def _frame_count(image: Image.Image) -> int:
        # Only TIFF pages are document pages; other formats' extra frames (animated WebP,
        # a camera JPEG's MPO previews) are not, so those files are one page.
        if image.format == "TIFF":
            return getattr(image, "n_frames", 1)
        return 1

    def _image_pages(self, path: Path) -> Iterator[RenderedPage]:
        with self._open_image(path) as image:
            page_count = self._frame_count(image)
            for page_number in range(self.first_page, min(page_count, self._last) + 1):
                try:
                    image.seek(page_number - 1)
                    _check_bomb(path, image)
                    # exif_transpose loads the frame and returns a copy turned upright (phone
                    # photos of pages carry their rotation in EXIF), so the next seek() cannot
                    # change an image already yielded.
                    frame = ImageOps.exif_transpose(image)
                    rgb = to_rgb(frame)
                except UnreadableDocumentError:
                    raise
                except (OSError, ValueError, SyntaxError, EOFError) as error:
                    where = f"page {page_number} of {page_count}: " if page_count > 1 else ""
                    raise UnreadableDocumentError(
                        str(path), f"{where}truncated or corrupted image ({error})"
                    ) from error
                yield RenderedPage(page_number, page_count, rgb, _image_dpi(frame))

    def _document(
        self, page: RenderedPage, path: Path, doc_id: str, extra_info: dict[str, Any] | None
    ) -> ImageDocument:
        page_id = page_id_for(doc_id, page.page_number)
        width, height = page.image.size
        metadata = dict(extra_info or {})
        metadata.update(
            doc_id=doc_id,
            page_id=page_id,
            file_path=_unicode_path(path),
            file_name=_unicode_path(path.name),
            page_number=page.page_number,
            page_count=page.page_count,
            width=width,
            height=height,
            dpi=page.dpi,
        )
        return ImageDocument(
            id_=page_id,
            text=page.text or "",
            image=base64.b64encode(self._encode(page.image)).decode("ascii"),
            image_mimetype=mimetype_of(self.image_format),
            metadata=metadata,
            excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
            excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
        )

    def _encode(self, image: Image.Image) -> bytes:
        if image.mode == "RGBX" and self.image_format == "JPEG":
            # Pillow's JPEG encoder reads pypdfium2's RGBX pages as they are; to_rgb() inside
            # encode_image() would first copy the page to RGB (about 2 ms, for identical bytes).
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.image_quality)
            return buffer.getvalue()
        return encode_image(image, self.image_format, self.image_quality)


def _walk(root: Path) -> list[Path]:
    """Supported files under ``root``, depth first in name order, without hidden entries."""
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()
    # An explicit stack (not recursion) so a very deep tree cannot hit the recursion limit.
    stack: list[Path] = [root]
    while stack:
        path = stack.pop()
        if path is not root and not path.is_dir():
            files.append(path)
            continue
        try:
            status = path.stat()
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError as error:
            logger.warning("skipping folder %s: %s", path, os_reason(error))
            continue
        # Identify folders by device and inode: a link back to an ancestor is seen again.
        if (status.st_dev, status.st_ino) in visited:
            continue
        visited.add((status.st_dev, status.st_ino))
        children = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                children.append(child)
            elif is_file and child.suffix.lower() in SUPPORTED_EXTENSIONS:
                children.append(child)
            elif entry.is_symlink() and not child.exists():
                logger.warning("skipping dangling symbolic link %s", child)
        stack.extend(reversed(children))
    return files


def _check_bomb(path: Path, image: Image.Image) -> None:
    budget = pixel_budget()
    width, height = image.size
    if budget is not None and width * height > budget:
        raise UnreadableDocumentError(str(path), _bomb_reason((width, height)))


def _bomb_reason(size: tuple[int, int] | None) -> str:
    budget = pixel_budget()
    what = f"{size[0]} x {size[1]} image" if size else "image"
    return (
        f"{what} is over Pillow's decompression-bomb limit of {budget} pixels "
        "(PIL.Image.MAX_IMAGE_PIXELS); raise that limit if you trust this file"
    )


def _image_dpi(image: Image.Image) -> int | None:
    resolution = image.info.get("dpi")
    try:
        return round(float(resolution[0])) if resolution else None
    except (TypeError, ValueError, IndexError):
        return None


def _unicode_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid Unicode text, for metadata.

    A file name that is not valid UTF-8 reaches Python with lone surrogates in it (PEP 383),
    which Arrow, LanceDB, JSON and tokenizers all refuse; its undecodable bytes are written as
    ``\\xNN`` escapes instead (``caf\\xe9.pdf``), the same way on every run.

    >>> _unicode_path(os.fsdecode(b"caf\\xe9.pdf"))
    'caf\\\\xe9.pdf'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _as_path_list(path_or_paths: Any) -> list[str | os.PathLike[str]]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [path_or_paths]
    return list(path_or_paths)


def _describe(paths: list[str | os.PathLike[str]]) -> str:
    names = [os.fspath(path) for path in paths]
    return repr(names[0]) if len(names) == 1 else repr(names)
