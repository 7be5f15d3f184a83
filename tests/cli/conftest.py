"""The CLI tests' index: a 3-page report.pdf and a text file named bad.pdf, indexed once per
session through ``llama-index-vlm index`` with the tiny ColPali checkpoint.
"""

from __future__ import annotations

import pytest
from cli_runner import PAGE_SIZE_PT, run_cli


@pytest.fixture(scope="session")
def indexed(tmp_path_factory, tiny_checkpoint):
    """The indexed files and store, and what the ``index`` run returned (status, out, err)."""
    from pdfs import write_text_pdf

    root = tmp_path_factory.mktemp("cli")
    pdf = write_text_pdf(
        root / "report.pdf",
        ["Revenue 2023", ["Warranty terms", "two years"], ["Installation", "Mount the bracket"]],
        width_pt=PAGE_SIZE_PT[0],
        height_pt=PAGE_SIZE_PT[1],
    )
    bad = root / "bad.pdf"
    bad.write_text("this is not a PDF")
    store = root / "vlm_index"
    colpali = tiny_checkpoint("colpali")
    status, out, err = run_cli(
        "index", pdf, bad, "--store", store, "--model", colpali, "--dpi", 72, "--batch-size", 2
    )
    return {
        "root": root,
        "pdf": pdf,
        "bad": bad,
        "store": store,
        "colpali": colpali,
        "index_run": (status, out, err),
    }


@pytest.fixture
def small_store(tmp_path) -> str:
    """A store of one 2-page document, written straight through the store: no model needed."""
    import numpy as np
    from page_documents import document_pages

    from llama_index_vlm.store import LanceDBPageStore

    uri = str(tmp_path / "small")
    vectors = np.eye(4, 16, dtype=np.float32)
    fingerprint = {"model": "tiny", "model_class": "ColPaliForRetrieval", "embedding_dim": 16}
    LanceDBPageStore(uri=uri).add(document_pages("report", 2), [vectors] * 2, fingerprint)
    return uri
