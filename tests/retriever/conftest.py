"""The retriever tests' store: the reports of retriever_corpus.py, ingested with the tiny
ColPali encoder.
"""

from __future__ import annotations

import pytest
from retriever_corpus import report_documents

from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture
def store(tmp_path, colpali_encoder):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(report_documents(), colpali_encoder, store, show_progress=False)
    return store
