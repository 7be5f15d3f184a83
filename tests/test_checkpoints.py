"""Loading a checkpoint (checkpoints.load_model), through the encoder's and the VLM's
from_pretrained: the class comes from the config, and what cannot be trusted is refused."""

from __future__ import annotations

import shutil

import pytest

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import InvalidCheckpointError, MissingWeightsError
from llama_index_vlm.vlm import HuggingFaceVLM

LOADERS = {
    "encoder": ColPaliEncoder.from_pretrained,
    "vlm": HuggingFaceVLM.from_pretrained,
}
HUB_IDS = {"encoder": "vidore/colpali-v1.3-hf", "vlm": "llava-hf/llava-1.5-7b-hf"}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_directory_without_a_config_is_refused(loader, tmp_path):
    with pytest.raises(InvalidCheckpointError, match="holds no config.json"):
        LOADERS[loader](tmp_path)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_an_offline_hub_id_says_how_to_use_a_local_checkpoint(loader):
    with pytest.raises(InvalidCheckpointError, match="pass a local directory"):
        LOADERS[loader](HUB_IDS[loader])


def test_a_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"not a model")
    with pytest.raises(InvalidCheckpointError, match="it is a file"):
        ColPaliEncoder.from_pretrained(tmp_path / "model.bin")


def test_the_encoder_class_comes_from_the_config_not_the_name(tiny_checkpoint, tmp_path):
    misleading = tmp_path / "colpali-v1.3-hf"  # a ColQwen2 checkpoint under a ColPali-like name
    shutil.copytree(tiny_checkpoint("colqwen2"), misleading)
    encoder = ColPaliEncoder.from_pretrained(misleading, show_progress=False)
    assert type(encoder.model).__name__ == "ColQwen2ForRetrieval"


def test_the_vlm_family_comes_from_the_config_not_the_name(tiny_checkpoint, tmp_path):
    misleading = tmp_path / "paligemma-3b-mix-448"  # a LLaVA checkpoint under a PaliGemma name
    shutil.copytree(tiny_checkpoint("llava"), misleading)
    assert HuggingFaceVLM.from_pretrained(misleading).family == "LLaVA"


def test_the_encoder_refuses_a_checkpoint_of_another_family(tiny_checkpoint):
    with pytest.raises(InvalidCheckpointError, match="'llava' checkpoint, not a ColPali-family"):
        ColPaliEncoder.from_pretrained(tiny_checkpoint("llava"))


def test_the_vlm_refuses_a_retriever_and_names_its_loader(tiny_checkpoint):
    with pytest.raises(InvalidCheckpointError, match="'colpali' checkpoint.*ColPaliEncoder"):
        HuggingFaceVLM.from_pretrained(tiny_checkpoint("colpali"))


def test_the_vlm_refuses_a_text_only_checkpoint(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(InvalidCheckpointError, match="'llama' checkpoint, not a supported"):
        HuggingFaceVLM.from_pretrained(tmp_path)


def test_an_encoder_checkpoint_missing_its_projection_head_is_refused(checkpoint_without):
    broken, dropped = checkpoint_without(
        "colpali", lambda name: name.startswith("embedding_proj_layer")
    )
    assert len(dropped) == 2
    with pytest.raises(MissingWeightsError, match="embedding_proj_layer.weight") as caught:
        ColPaliEncoder.from_pretrained(broken)
    assert set(caught.value.missing) == {"embedding_proj_layer.weight", "embedding_proj_layer.bias"}


def test_a_vlm_checkpoint_missing_its_language_head_is_refused(checkpoint_without):
    broken, dropped = checkpoint_without("llava", lambda name: name.endswith("lm_head.weight"))
    assert len(dropped) == 1
    with pytest.raises(MissingWeightsError, match="lm_head.weight") as caught:
        HuggingFaceVLM.from_pretrained(broken)
    assert [name.split(".")[-2] for name in caught.value.missing] == ["lm_head"]


def test_a_checkpoint_of_pickled_weights_only_is_refused_clearly(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file

    path = tmp_path / "bin-only"
    shutil.copytree(tiny_checkpoint("qwen2_vl"), path)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(InvalidCheckpointError, match="loads safetensors weights only") as refused:
        HuggingFaceVLM.from_pretrained(path)
    assert "weights_only" not in str(refused.value)


def test_a_generic_family_loads_as_the_class_auto_model_for_image_text_to_text_picks(
    tiny_checkpoint, loading_calls
):
    HuggingFaceVLM.from_pretrained(tiny_checkpoint("gemma3"))
    assert [name for name, _ in loading_calls if "For" in name] == [
        "Gemma3ForConditionalGeneration"
    ]
