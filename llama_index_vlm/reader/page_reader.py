"""PDFPageReader: PDFs, images and folders of them -> one LlamaIndex ImageDocument per page.

The reader composes the steps of :mod:`llama_index_vlm.reader`: it lists the files
(:mod:`~llama_index_vlm.reader.files`), renders each one's pages (the PDF renderers of
:mod:`~llama_index_vlm.reader.pdf_renderers`, or :mod:`~llama_index_vlm.reader.image_files`)
and turns every page into an ``ImageDocument`` (:mod:`~llama_index_vlm.reader.documents`).

Errors are per file: :meth:`PDFPageReader.read_file` raises
:class:`~llama_index_vlm.errors.UnreadableDocumentError` (naming the file and the reason) for a
file it cannot read, so a caller that loops over :meth:`PDFPageReader.list_files` can record the
failure and go on with the next file. ``load_data`` raises on the first bad file by default;
``on_error="skip"`` logs it and goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import ImageDocument

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError
from llama_index_vlm.pages import doc_id_for_file
from llama_index_vlm.reader import files
from llama_index_vlm.reader.documents import page_document
from llama_index_vlm.reader.encoded import EncodedPage
from llama_index_vlm.reader.render_workers import RenderLimits, count_in_worker, pages_in_worker
from llama_index_vlm.reader.rendered import DEFAULT_MAX_PAGES
from llama_index_vlm.reader.sources import ReadSettings, count_file_pages, encoded_pages

logger = logging.getLogger(__name__)


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

    Limits, so that no file costs more than a bounded memory and time:

    - pixels: an image file over Pillow's decompression-bomb limit
      (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels) is refused; a PDF page that would
      render over it is rendered at the highest dpi that fits (its ``dpi`` metadata says
      which) with a warning. A page wider or taller than JPEG allows (65,500 px) is stored as
      PNG.
    - pages: a file with more than ``max_pages`` pages to read (default 10,000) is refused.
    - rendering: each file is opened, counted and rendered in a worker process whose memory
      is capped at ``render_memory_limit`` MiB, and which is stopped when opening the file or
      rendering one page takes longer than ``render_timeout`` seconds; the file then fails
      with the reason, and the next file gets a fresh worker. Set both to ``None`` to render
      in this process without limits (and without the worker's few milliseconds a page).
    - folders: a symbolic link inside a folder is followed only when its target lies inside
      that folder, unless ``follow_symlinks=True`` (see :meth:`list_files`).

    Any exception while reading a file (Pillow raises ``TypeError``, ``KeyError``,
    ``ValueError`` on malformed images) is that file's :class:`UnreadableDocumentError`.
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
    max_pages: int | None = Field(
        default=DEFAULT_MAX_PAGES,
        ge=1,
        description="Most pages read from one file (in its page range); a file with more is "
        "refused. None: no limit.",
    )
    render_timeout: float | None = Field(
        default=30.0,
        gt=0,
        description="Seconds a render worker may take to open a file and count its pages, or "
        "to render one page, before it is stopped and the file fails. None: no time limit.",
    )
    render_memory_limit: int | None = Field(
        default=2048,
        ge=256,
        le=1 << 24,
        description="Address space of a render worker, in MiB; a file needing more fails. "
        "None: no cap. With both limits None, files are read in this process.",
    )
    follow_symlinks: bool = Field(
        default=False,
        description="Follow symbolic links inside a folder that point outside it.",
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
        path_or_paths: files.PathOrPaths,
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
        seen_doc_ids: dict[str, Path] = {}
        for path in self._files_to_load(path_or_paths, doc_id):
            try:
                file_doc_id = self._unseen_doc_id(path, doc_id, seen_doc_ids)
                if file_doc_id is not None:
                    yield from self.read_file(path, doc_id=file_doc_id, extra_info=extra_info)
            except UnreadableDocumentError as error:
                if on_error == "raise":
                    raise
                logger.warning("skipping %s: %s", error.path, error.reason)

    def load_data(
        self,
        path_or_paths: files.PathOrPaths,
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

    def _files_to_load(self, path_or_paths: files.PathOrPaths, doc_id: str | None) -> list[Path]:
        """The files of one ``load_data`` call: at least one, and one only if ``doc_id`` is set."""
        path_or_paths = files.as_path_list(path_or_paths)
        found = self.list_files(path_or_paths)
        if not found:
            raise EmptyInputError(
                f"no PDF or image files ({', '.join(sorted(files.SUPPORTED_EXTENSIONS))}) found in "
                f"{files.describe_paths(path_or_paths)}"
            )
        if doc_id is not None and len(found) > 1:
            raise ValueError(
                f"doc_id can name one file, but {len(found)} files were found; leave it out to "
                "use each file's sha256"
            )
        return found

    @staticmethod
    def _unseen_doc_id(path: Path, doc_id: str | None, seen: dict[str, Path]) -> str | None:
        """The doc_id of ``path``, or ``None`` (with a warning) when an earlier file had it."""
        # Check the path first, so an unsupported or empty file is not hashed first.
        files.check_file(path)
        file_doc_id = doc_id if doc_id is not None else doc_id_for_file(path)
        if file_doc_id in seen:
            logger.warning(
                "skipping %s: same bytes as %s (doc_id %s)", path, seen[file_doc_id], file_doc_id
            )
            return None
        seen[file_doc_id] = path
        return file_doc_id

    # ------------------------------------------------------------------- per-file hooks

    def list_files(self, path_or_paths: files.PathOrPaths) -> list[Path]:
        """Expand folders into the files :meth:`read_file` would read, as absolute paths.

        Folders are walked recursively in sorted order (by name at each level), skipping hidden
        (dot) files and folders, files of other types and dangling links; a folder reached
        twice through symbolic links is walked once, so link loops end. Paths given explicitly
        are kept whatever they are (missing, hidden, unsupported type) so that
        :meth:`read_file` reports each one as a failure of that file. A file reached twice
        (e.g. listed and inside a listed folder) is kept once, at its first place. A symbolic
        link inside a folder that points outside it is skipped with a warning unless
        ``follow_symlinks=True``.
        """
        return files.list_files(path_or_paths, follow_symlinks=self.follow_symlinks)

    def count_pages(self, path: str | os.PathLike[str]) -> int:
        """How many documents :meth:`read_file` would yield for ``path``, without rendering.

        Raises the :class:`UnreadableDocumentError` :meth:`read_file` would, except for
        failures only decoding shows (an image whose pixel data is cut short). Cheap: it reads
        a PDF's page tree and an image's header, so it suits a progress bar's total.
        """
        path = files.check_file(path)
        limits = self._render_limits()
        if limits is None:
            return count_file_pages(path, self._read_settings())
        return count_in_worker(path, self._read_settings(), limits)

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
        path = files.check_file(path)
        pages = self._encoded_pages(path)
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

    def _encoded_pages(self, path: Path) -> Iterator[EncodedPage]:
        limits = self._render_limits()
        if limits is None:
            return encoded_pages(path, self._read_settings())
        return pages_in_worker(path, self._read_settings(), limits)

    def _render_limits(self) -> RenderLimits | None:
        """The render worker's limits, or None to read in this process."""
        if self.render_timeout is None and self.render_memory_limit is None:
            return None
        if os.name != "posix":  # no RLIMIT_AS, no select() on pipes
            logger.warning("render limits need a POSIX system; reading files in this process")
            return None
        return RenderLimits(self.render_timeout, self.render_memory_limit)

    def _read_settings(self) -> ReadSettings:
        return ReadSettings(
            dpi=self.dpi,
            renderer=self.renderer,
            image_format=self.image_format,
            image_quality=self.image_quality,
            first_page=self.first_page,
            last_page=self.last_page,
            extract_text=self.extract_text,
            pdf2image_window=self.pdf2image_window,
            max_pages=self.max_pages,
        )

    @staticmethod
    def _document(
        page: EncodedPage, path: Path, doc_id: str, extra_info: dict[str, Any] | None
    ) -> ImageDocument:
        return page_document(page, path, doc_id, extra_info)
