"""LoRA adapters on loaded checkpoints: loaded, merged, and recorded in the fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llama_index_vlm.adapters import adapter_digest
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import InvalidCheckpointError, ModelMismatchError
from llama_index_vlm.fingerprint import check_compatible, identity


@pytest.fixture(scope="module")
def colpali_adapter(tiny_checkpoint, tmp_path_factory):
    """A LoRA adapter for the tiny ColPali with random (non-zero) weights: it changes vectors."""
    import transformers
    from peft import LoraConfig, get_peft_model

    base = transformers.ColPaliForRetrieval.from_pretrained(tiny_checkpoint("colpali"))
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj", "embedding_proj_layer"],
        init_lora_weights=False,
    )
    path = tmp_path_factory.mktemp("colpali_adapter")
    get_peft_model(base, config).save_pretrained(path)
    return path


def page_and_query(encoder):
    page = Image.new("RGB", (40, 60), (200, 30, 30))
    return encoder.embed_images([page])[0], encoder.embed_queries(["revenue"])[0]


def test_an_adapter_changes_the_vectors(tiny_checkpoint, colpali_adapter, colpali_encoder):
    adapted = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=colpali_adapter)
    assert not np.allclose(page_and_query(adapted)[1], page_and_query(colpali_encoder)[1])


def test_a_merged_adapter_gives_the_same_vectors(tiny_checkpoint, colpali_adapter):
    kept = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=colpali_adapter)
    merged = ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), adapter=colpali_adapter, merge_adapter=True
    )
    for ours, theirs in zip(page_and_query(kept), page_and_query(merged), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_the_fingerprint_records_the_adapter(tiny_checkpoint, colpali_adapter):
    adapted = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=colpali_adapter)
    fingerprint = adapted.fingerprint
    assert fingerprint["adapter"] == str(colpali_adapter.resolve())
    assert fingerprint["adapter_digest"] == adapter_digest(colpali_adapter)
    assert fingerprint["model_class"] == "ColPaliForRetrieval"


def test_merged_and_kept_adapters_share_a_fingerprint(tiny_checkpoint, colpali_adapter):
    kept = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=colpali_adapter)
    merged = ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), adapter=colpali_adapter, merge_adapter=True
    )
    assert identity(kept.fingerprint) == identity(merged.fingerprint)


def test_adapted_vectors_never_join_the_base_models_index(
    tiny_checkpoint, colpali_adapter, colpali_encoder
):
    adapted = ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=colpali_adapter)
    with pytest.raises(ModelMismatchError):
        check_compatible(adapted.fingerprint, stored=colpali_encoder.fingerprint)


def test_the_digest_ignores_where_the_adapter_lies(colpali_adapter, tmp_path):
    import shutil

    copy = shutil.copytree(colpali_adapter, tmp_path / "copy")
    assert adapter_digest(copy) == adapter_digest(colpali_adapter)


def test_a_folder_without_an_adapter_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(InvalidCheckpointError, match="is not a LoRA adapter directory"):
        ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), adapter=tmp_path)


def test_an_adapter_of_another_architecture_is_refused(tiny_checkpoint, colpali_adapter):
    with pytest.raises(InvalidCheckpointError, match="does not fit this ColQwen2ForRetrieval"):
        ColPaliEncoder.from_pretrained(tiny_checkpoint("colqwen2"), adapter=colpali_adapter)
