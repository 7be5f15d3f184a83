"""Reading documents as page images: PDFs, images and folders of them -> one ImageDocument per page.

The reader is the first step of the data flow, and its modules are its phases:

- :mod:`~llama_index_vlm.reader.files`: which files are read (supported types, folder walks,
  the checks a path passes before it is opened);
- :mod:`~llama_index_vlm.reader.pdf`: opening a PDF and planning its pages (page count, page
  sizes, the dpi that fits the pixel budget) and its text layer;
- :mod:`~llama_index_vlm.reader.pdf_renderers`: the pypdfium2 and pdf2image (poppler) renderers;
- :mod:`~llama_index_vlm.reader.image_files`: page images and the frames of multi-frame TIFFs;
- :mod:`~llama_index_vlm.reader.rendered`: :class:`RenderedPage`, what both page sources yield;
- :mod:`~llama_index_vlm.reader.encoded`: a page encoded as it will be stored;
- :mod:`~llama_index_vlm.reader.sources`: the pages of one file, counted or read, with any
  error becoming that file's ``UnreadableDocumentError``;
- :mod:`~llama_index_vlm.reader.render_workers` and
  :mod:`~llama_index_vlm.reader.render_worker`: reading each file in a child process with a
  memory cap and a time limit per page (:mod:`~llama_index_vlm.reader.worker_protocol`: the
  messages between them);
- :mod:`~llama_index_vlm.reader.documents`: an encoded page as a LlamaIndex ``ImageDocument``;
- :mod:`~llama_index_vlm.reader.query_images`: an image query, opened with the same checks;
- :mod:`~llama_index_vlm.reader.page_reader`: :class:`PDFPageReader`, which composes them.

Nothing here imports torch or transformers; :class:`PDFPageReader` (and so LlamaIndex) is
imported when first used, so a render worker starts without LlamaIndex.
"""

from typing import TYPE_CHECKING, Any

from llama_index_vlm.reader.files import SUPPORTED_EXTENSIONS
from llama_index_vlm.reader.image_files import IMAGE_EXTENSIONS
from llama_index_vlm.reader.pdf import PDF_EXTENSIONS, fit_dpi
from llama_index_vlm.reader.pdf_renderers import render_pdfium, render_poppler
from llama_index_vlm.reader.rendered import DEFAULT_MAX_PAGES, RenderedPage

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from llama_index_vlm.reader.page_reader import PDFPageReader

__all__ = [
    "DEFAULT_MAX_PAGES",
    "IMAGE_EXTENSIONS",
    "PDF_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "PDFPageReader",
    "RenderedPage",
    "fit_dpi",
    "render_pdfium",
    "render_poppler",
]


def __getattr__(name: str) -> Any:
    if name == "PDFPageReader":
        from llama_index_vlm.reader.page_reader import PDFPageReader

        return PDFPageReader
    raise AttributeError(f"module 'llama_index_vlm.reader' has no attribute {name!r}")
