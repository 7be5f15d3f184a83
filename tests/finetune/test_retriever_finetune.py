"""Fine-tuning a ColPali-family retriever: it learns, and it writes what it promises."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import TrainingDataError
from llama_index_vlm.finetune.evaluation import RETRIEVAL_METRICS, PageRanker, evaluate_retriever
from llama_index_vlm.finetune.pairs import PageImages, TrainingPair, save_pairs
from llama_index_vlm.finetune.retriever import finetune_retriever, mine_hard_negatives
from llama_index_vlm.finetune.training import TrainingSettings
from llama_index_vlm.testing.finetune_tasks import word_page_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learned(tiny_checkpoint, tmp_path_factory):
    """ColPali fine-tuned for 100 steps on the word task, evaluated on its own pairs."""
    pairs = word_page_pairs(tmp_path_factory.mktemp("word_pages"), n_pages=8)
    settings = TrainingSettings(
        max_steps=100,
        batch_size=8,
        learning_rate=5e-3,
        warmup=0,
        lora_dropout=0.0,
        logging_steps=10,
        save_steps=1000,
        show_progress=False,
    )
    result = finetune_retriever(
        pairs,
        tmp_path_factory.mktemp("learned") / "adapter",
        base=tiny_checkpoint("colpali"),
        eval_pairs=pairs,
        settings=settings,
        device="cpu",
    )
    return pairs, result


def test_fine_tuning_raises_recall_at_1_on_a_word_task(learned):
    _, result = learned
    before, after = result.comparison.before, result.comparison.after
    assert after["recall@1"] >= before["recall@1"] + 0.25, result.comparison.table()


def test_the_training_loss_falls(learned):
    _, result = learned
    assert result.losses[-1] < result.losses[0]


@pytest.mark.parametrize("merge", [False, True])
def test_the_saved_adapter_loads_back_with_the_same_metrics(learned, tiny_checkpoint, merge):
    pairs, result = learned
    encoder = ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), adapter=result.adapter_dir, merge_adapter=merge
    )
    metrics = evaluate_retriever(encoder, pairs, PageImages())
    for name in RETRIEVAL_METRICS:
        assert metrics[name] == pytest.approx(result.comparison.after[name]), name


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory):
    """One short run from a pairs file of image paths, with a held-out fraction."""
    folder = tmp_path_factory.mktemp("retriever_run")
    pairs_file = save_pairs(word_page_pairs(folder / "pages", n_pages=6), folder / "pairs.jsonl")

    settings = TrainingSettings(max_steps=1, batch_size=3, show_progress=False, save_steps=1)
    result = finetune_retriever(
        pairs_file,
        folder / "adapter",
        base=tiny_checkpoint("colpali"),
        settings=settings,
        eval_fraction=0.5,
        device="cpu",
    )
    return result


def test_the_adapter_is_saved_in_peft_format(trained):
    config = json.loads((trained.adapter_dir / "adapter_config.json").read_text())
    weights = load_file(trained.adapter_dir / "adapter_model.safetensors")
    assert config["peft_type"] == "LORA" and any("embedding_proj_layer" in name for name in weights)


def test_the_adapter_leaves_the_vision_tower_alone(trained):
    weights = load_file(trained.adapter_dir / "adapter_model.safetensors")
    assert any("language_model" in name for name in weights)
    assert not any("vision_tower" in name for name in weights)


def test_the_metrics_file_holds_the_comparison(trained):
    written = json.loads((trained.adapter_dir / "metrics.json").read_text())
    assert written["before"] == trained.comparison.before and written["eval_pairs"] == 3


def test_the_record_names_the_base_and_the_loss(trained, tiny_checkpoint):
    record = json.loads((trained.adapter_dir / "llama_index_vlm_adapter.json").read_text())
    assert (record["kind"], record["base"], record["loss"]) == (
        "retriever",
        str(tiny_checkpoint("colpali")),
        "cross_entropy",
    )


def test_checkpoints_go_under_the_output_folder(trained):
    assert (
        trained.adapter_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors"
    ).is_file()


def test_resuming_continues_from_the_last_checkpoint(
    tiny_checkpoint, word_pairs, quick_settings, tmp_path
):
    base = tiny_checkpoint("colpali")
    out = tmp_path / "adapter"
    first = quick_settings(max_steps=2, save_steps=2, seed=0)
    finetune_retriever(
        word_pairs, out, base=base, eval_pairs=word_pairs[:2], settings=first, device="cpu"
    )
    saved = load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    # Another seed would start from other adapter weights: equal weights prove the resume.
    again = quick_settings(max_steps=2, seed=1, resume_from_checkpoint=True)
    finetune_retriever(
        word_pairs, out, base=base, eval_pairs=word_pairs[:2], settings=again, device="cpu"
    )
    resumed = load_file(out / "adapter_model.safetensors")
    assert all((resumed[name] == saved[name]).all() for name in saved)


def test_gradient_accumulation_takes_one_step_per_accumulated_batches(
    tiny_checkpoint, word_pairs, quick_settings, tmp_path
):
    settings = quick_settings(
        max_steps=None, epochs=1, batch_size=2, gradient_accumulation_steps=2, save_steps=1
    )
    finetune_retriever(
        word_pairs,
        tmp_path / "adapter",
        base=tiny_checkpoint("colpali"),
        eval_pairs=word_pairs[:2],
        settings=settings,
        device="cpu",
    )
    checkpoints = sorted(p.name for p in (tmp_path / "adapter" / "checkpoints").iterdir())
    assert checkpoints[-1] == "checkpoint-2"  # 8 pairs / (2 per batch x 2 batches per step)


def test_a_colqwen2_retriever_trains_too(tiny_checkpoint, word_pairs, quick_settings, tmp_path):
    result = finetune_retriever(
        word_pairs,
        tmp_path / "adapter",
        base=tiny_checkpoint("colqwen2"),
        eval_pairs=word_pairs[:2],
        settings=quick_settings(max_steps=1),
        device="cpu",
    )
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_hard_negatives_for_some_pairs_only_are_refused_before_loading(word_pairs, tmp_path):
    pairs = [
        TrainingPair(
            word_pairs[0].query, image=word_pairs[0].image, negative_image=word_pairs[1].image
        ),
        *word_pairs[1:],
    ]
    with pytest.raises(TrainingDataError, match="1 of 8 training pairs have a hard negative"):
        finetune_retriever(
            pairs, tmp_path / "adapter", base=str(tmp_path / "no-model"), eval_pairs=pairs[-1:]
        )


def test_a_mined_negative_is_the_best_ranked_page_of_another_query(colpali_encoder, word_pairs):
    ranker = PageRanker(colpali_encoder, PageImages(), [pair.page_key for pair in word_pairs])
    mined = mine_hard_negatives(word_pairs, ranker)
    for pair, ranking in zip(mined, ranker.rank([pair.query for pair in word_pairs]), strict=True):
        assert pair.negative_key == next(key for key in ranking if key != pair.page_key)
