"""The retriever tests' corpus: three reports of four pages each (tests/page_documents.py)."""

from __future__ import annotations

from llama_index.core.schema import ImageDocument
from page_documents import document_pages

N_FILES, PAGES_PER_FILE = 3, 4
#: Larger than the builder's default, so the tiny encoder sees every page at full resolution.
PAGE_SIZE = (96, 128)


def report_documents(n_files: int = N_FILES, first: int = 0) -> list[ImageDocument]:
    """The pages of ``doc{first}`` ... at ``/reports/doc{n}.pdf``, from the year 2020 on."""
    return [
        page
        for file_index in range(n_files)
        for page in document_pages(
            f"doc{file_index + first}",
            PAGES_PER_FILE,
            file_path=f"/reports/doc{file_index + first}.pdf",
            size=PAGE_SIZE,
            year=2020 + file_index,
        )
    ]
