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


@pytest.fixture(scope="session")
def vlms(tiny_checkpoint):
    """``vlms(kind)`` -> a ``HuggingFaceVLM`` of that tiny checkpoint (6 new tokens), loaded once
    per session; tests that need other settings use ``chats.variant`` (no second load).
    """
    from llama_index_vlm.vlm import HuggingFaceVLM

    loaded: dict = {}

    def get(kind: str):
        if kind not in loaded:
            loaded[kind] = HuggingFaceVLM.from_pretrained(tiny_checkpoint(kind), max_new_tokens=6)
        return loaded[kind]

    return get


@pytest.fixture
def checkpoint_without(tiny_checkpoint, tmp_path):
    """``checkpoint_without(kind, dropped)`` -> ``(path, names)``: a copy of a tiny checkpoint
    whose weights lack those whose name ``dropped(name)`` is true, and the names dropped.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    def copy(kind: str, dropped) -> tuple:
        path = tmp_path / f"{kind}-without-weights"
        shutil.copytree(tiny_checkpoint(kind), path)
        weights = load_file(path / "model.safetensors")
        kept = {name: tensor for name, tensor in weights.items() if not dropped(name)}
        save_file(kept, path / "model.safetensors", metadata={"format": "pt"})
        return path, sorted(set(weights) - set(kept))

    return copy


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


@pytest.fixture
def loading_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Records the keyword arguments of every transformers ``from_pretrained`` call."""
    import transformers

    calls: list[tuple[str, dict]] = []
    owners = [
        transformers.PreTrainedModel,
        transformers.ProcessorMixin,
        transformers.AutoProcessor,
        transformers.AutoConfig,
        transformers.AutoTokenizer,
        transformers.PretrainedConfig,
    ]
    for owner in owners:
        real = owner.__dict__["from_pretrained"].__func__

        def spy(cls, *args, _real=real, **kwargs):
            calls.append((cls.__name__, kwargs))
            return _real(cls, *args, **kwargs)

        monkeypatch.setattr(owner, "from_pretrained", classmethod(spy))
    return calls


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
