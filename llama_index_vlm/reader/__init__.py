"""Reading documents as page images: PDFs, images and folders of them -> one ImageDocument per page.

The reader is the first step of the data flow, and its modules are its phases:

- :mod:`~llama_index_vlm.reader.files`: which files are read (supported types, folder walks,
  the checks a path passes before it is opened);
- :mod:`~llama_index_vlm.reader.pdf`: opening a PDF and planning its pages (page count, page
  sizes, the dpi that fits the pixel budget) and its text layer;
- :mod:`~llama_index_vlm.reader.pdf_renderers`: the pypdfium2 and pdf2image (poppler) renderers;
- :mod:`~llama_index_vlm.reader.image_files`: page images and the frames of multi-frame TIFFs;
- :mod:`~llama_index_vlm.reader.rendered`: :class:`RenderedPage`, what both page sources yield;
- :mod:`~llama_index_vlm.reader.documents`: a rendered page as a LlamaIndex ``ImageDocument``;
- :mod:`~llama_index_vlm.reader.page_reader`: :class:`PDFPageReader`, which composes them.

Nothing here imports torch or transformers.
"""

from llama_index_vlm.reader.files import SUPPORTED_EXTENSIONS
from llama_index_vlm.reader.image_files import IMAGE_EXTENSIONS
from llama_index_vlm.reader.page_reader import PDFPageReader
from llama_index_vlm.reader.pdf import PDF_EXTENSIONS, fit_dpi
from llama_index_vlm.reader.pdf_renderers import render_pdfium, render_poppler
from llama_index_vlm.reader.rendered import RenderedPage

__all__ = [
    "IMAGE_EXTENSIONS",
    "PDF_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "PDFPageReader",
    "RenderedPage",
    "fit_dpi",
    "render_pdfium",
    "render_poppler",
]
