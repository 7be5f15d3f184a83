"""``llama-index-vlm finetune ...`` and ``reindex`` (llama_index_vlm.cli.finetune)."""

from __future__ import annotations

import json

import pytest
from cli_runner import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(indexed, tmp_path_factory):
    """An adapter trained from the CLI on the indexed report: one pair per page."""
    from llama_index_vlm.store import LanceDBPageStore

    root = tmp_path_factory.mktemp("cli_finetune")
    (doc_id,) = LanceDBPageStore(uri=str(indexed["store"])).doc_ids()
    queries = ["revenue 2023", "warranty terms", "installation"]
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": query, "doc_id": doc_id, "page_number": number}) + "\n"
            for number, query in enumerate(queries, start=1)
        )
    )
    adapter = root / "adapter"
    run = run_cli(
        "finetune", "retriever", "--pairs", pairs, "--store", indexed["store"], "--out", adapter,
        "--max-steps", 2, "--batch-size", 2, "--lr", 5e-3, "--no-progress", "--device", "cpu",
    )  # fmt: skip
    return {"root": root, "adapter": adapter, "pairs": pairs, "run": run}


def test_finetune_retriever_prints_the_before_after_table(tuned):
    status, out, err = tuned["run"]
    assert status == 0, err
    assert out.splitlines()[0].split() == ["metric", "before", "after", "change"]
    assert f"adapter: {tuned['adapter']}" in out


def test_finetune_retriever_writes_the_adapter_and_metrics(tuned):
    metrics = json.loads((tuned["adapter"] / "metrics.json").read_text())
    assert (tuned["adapter"] / "adapter_config.json").is_file() and metrics["train_pairs"] == 2


@pytest.fixture(scope="module")
def reindexed(indexed, tuned):
    """The indexed report re-embedded with the CLI-trained adapter into a new index."""
    new = tuned["root"] / "tuned_index"
    run = run_cli(
        "reindex", "--store", indexed["store"], "--to", new, "--adapter", tuned["adapter"],
        "--no-progress", "--device", "cpu",
    )  # fmt: skip
    return {"store": new, "run": run}


def test_reindex_embeds_the_pages_with_the_adapter(reindexed, tuned):
    from llama_index_vlm.adapters import adapter_digest
    from llama_index_vlm.store import LanceDBPageStore

    status, _, err = reindexed["run"]
    assert status == 0, err
    store = LanceDBPageStore(uri=str(reindexed["store"]))
    assert store.count() == 3
    assert store.fingerprint["adapter_digest"] == adapter_digest(tuned["adapter"])


def test_the_reindexed_index_is_searched_with_its_adapter(reindexed):
    status, out, err = run_cli("search", "revenue", "--store", reindexed["store"])
    assert status == 0, err
    assert len(out.splitlines()) == 3


def test_the_adapter_is_refused_on_the_base_models_index(indexed, tuned):
    status, _, err = run_cli(
        "search", "revenue", "--store", indexed["store"], "--adapter", tuned["adapter"]
    )
    assert status == 2 and "cannot be compared" in err


def test_pairs_naming_a_missing_page_are_a_usage_error(indexed, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "page_id": "nope-p1"}) + "\n")
    status, _, err = run_cli(
        "finetune", "retriever", "--pairs", pairs, "--eval-pairs", pairs,
        "--store", indexed["store"], "--out", tmp_path / "adapter",
    )  # fmt: skip
    assert status == 2 and "nope-p1" in err


def test_finetune_answerer_trains_llava_from_a_qa_file(tiny_checkpoint, tmp_path):
    from PIL import Image

    lines = []
    for colour in ("red", "blue", "green"):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{colour}.png")
        lines.append(
            json.dumps({"image": f"{colour}.png", "question": "Colour?", "answer": colour})
        )
    (tmp_path / "qa.jsonl").write_text("\n".join(lines) + "\n")
    status, out, err = run_cli(
        "finetune", "answerer", "--data", tmp_path / "qa.jsonl", "--base", tiny_checkpoint("llava"),
        "--out", tmp_path / "adapter", "--max-steps", 1, "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert status == 0, err
    assert out.splitlines()[1].split()[0] == "exact_match"


def test_finetune_pairs_drafts_synthetic_pairs(indexed, tiny_checkpoint, tmp_path):
    out_file = tmp_path / "pairs.jsonl"
    status, out, err = run_cli(
        "finetune", "pairs", "--store", indexed["store"], "--vlm", tiny_checkpoint("llava"),
        "--out", out_file, "--limit", 2, "--device", "cpu",
    )  # fmt: skip
    assert status == 0, err
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert all(record["synthetic"] is True and record["page_id"] for record in records)
