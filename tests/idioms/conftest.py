"""A real tiny page index (3 PDF pages with a text layer, the tiny ColPali encoder) and the tiny
LLaVA, shared by the LlamaIndex idiom tests; ``prompt_of`` reads what reached the model.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def idiom_index(tmp_path_factory, colpali_encoder):
    """A ``VisualDocumentIndex`` of report.pdf: "Revenue 2023", "Spare part XK-4471-B pump",
    "Outlook", read with its text layer.
    """
    from pdfs import write_text_pdf

    from llama_index_vlm import LanceDBPageStore, PDFPageReader, VisualDocumentIndex

    root = tmp_path_factory.mktemp("idioms")
    pdf = write_text_pdf(
        root / "report.pdf", ["Revenue 2023", ["Spare part", "XK-4471-B pump"], "Outlook"]
    )
    documents = PDFPageReader(dpi=36, extract_text=True).load_data(pdf)
    store = LanceDBPageStore(uri=str(root / "vlm_index"))
    return VisualDocumentIndex.from_documents(
        documents, encoder=colpali_encoder, store=store, show_progress=False
    )


@pytest.fixture(scope="session")
def llava(vlms):
    return vlms("llava")


@pytest.fixture
def prompt_of(llava):
    """``prompt_of(call)`` -> the text of a ``model.generate`` call's prompt."""

    def decode(call: dict) -> str:
        return llava.processor.tokenizer.decode(call["input_ids"][0])

    return decode


@pytest.fixture
def images_in():
    """``images_in(call)`` -> how many page images a tiny LLaVA ``generate`` call received."""

    def count(call: dict) -> int:
        pixel_values = call.get("pixel_values")
        return 0 if pixel_values is None else int(pixel_values.shape[0])

    return count
