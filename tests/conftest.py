"""Shared fixtures. Tests run offline: every model is a tiny checkpoint built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Tiny checkpoints of the real architectures, built once per test session.


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(kind)`` -> path of a tiny checkpoint, built once per session."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")

    def build(kind: str):
        return make_tiny_checkpoint(kind, root / kind)

    return build


@pytest.fixture(scope="session")
def colpali_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), show_progress=False)


@pytest.fixture(scope="session")
def colqwen2_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colqwen2"), show_progress=False)


@pytest.fixture
def seen(monkeypatch):
    """``seen(vlm)`` -> the keyword arguments of every ``vlm.model.generate`` call from now on."""

    def spy_on(vlm) -> list[dict]:
        calls: list[dict] = []
        original = vlm.model.generate

        def generate(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(vlm.model, "generate", generate)
        return calls

    return spy_on


# ---------------------------------------------------------------------------------------------
# PDFs and page images for the reader tests, made from scratch by tests/pdfs.py (no binary
# fixtures). Owned by the reader's tests; keep other fixtures above this block.


@pytest.fixture
def solid_pdf(tmp_path):
    """A 3-page PDF written by Pillow: 72 x 144 pt pages, solid red, green and blue."""
    from pdfs import write_image_pdf

    return write_image_pdf(tmp_path / "solid.pdf", 3, size_px=(72, 144))


@pytest.fixture
def text_pdf(tmp_path):
    """A 2-page hand-written PDF whose text layer reads "Revenue 2023", then two lines."""
    from pdfs import write_text_pdf

    pages = ["Revenue 2023", ["Net income 42", "Costs 7"]]
    return write_text_pdf(tmp_path / "text.pdf", pages, width_pt=300, height_pt=300)


# ---------------------------------------------------------------------------------------------
# Ingestion tests (tests/ingestion/, tests/stress/).


@pytest.fixture
def check_whole_pages():
    """``check_whole_pages(store)`` -> the set of stored page ids, after checking that every
    page is whole and stored once: its vectors (as many as its ``n_vectors``, finite unit rows),
    an image that decodes at its recorded size, and complete page metadata.
    """
    import numpy as np

    from llama_index_vlm.images import decode_image
    from llama_index_vlm.pages import page_id_for

    def check(store) -> set[str]:
        page_ids = store.page_ids()
        assert len(page_ids) == len(set(page_ids)) == store.count(), "a page_id is duplicated"
        if not page_ids:
            return set()
        n_vectors = store.vector_counts()
        nodes = store.get_nodes(page_ids)
        assert [node.node_id for node in nodes] == page_ids
        for node, vectors in zip(nodes, store.get_page_vectors(page_ids), strict=True):
            page_id, metadata = node.node_id, node.metadata
            assert vectors.shape == (n_vectors[page_id], store.dim) and len(vectors) > 0, page_id
            norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
            np.testing.assert_allclose(norms, 1.0, atol=1e-2, err_msg=page_id)
            for key in ("doc_id", "file_path", "file_name", "page_number", "page_count"):
                assert metadata.get(key) is not None, (page_id, key)
            assert page_id == page_id_for(metadata["doc_id"], metadata["page_number"])
            assert 1 <= metadata["page_number"] <= metadata["page_count"], page_id
            assert decode_image(node.image).size == (metadata["width"], metadata["height"])
        return set(page_ids)

    return check


@pytest.fixture
def versions_page_ids():
    """``versions_page_ids(store)`` -> the page ids of every committed version of the store's
    table, oldest first: what any reader could ever have seen.
    """

    def read(store) -> list[set[str]]:
        return [set(store.page_ids(version=v)) for v in range(1, store.version + 1)]

    return read


@pytest.fixture
def failures():
    """``failures(report)`` -> ``{file name: reason}`` of the files an ingest did not index."""
    from pathlib import Path

    def by_name(report) -> dict[str, str]:
        return {Path(failed.path).name: failed.reason for failed in report.failed}

    return by_name
