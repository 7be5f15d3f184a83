"""Evaluation metrics and the before/after report."""

from __future__ import annotations

import json
import math

import pytest

from llama_index_vlm.finetune.evaluation import (
    Comparison,
    anls,
    answer_metrics,
    exact_match,
    ranking_metrics,
)


def test_a_perfect_ranking_scores_one_everywhere():
    metrics = ranking_metrics([["a", "b", "c"], ["b", "a", "c"]], [{"a"}, {"b"}])
    assert metrics == {"ndcg@5": 1.0, "recall@1": 1.0, "recall@5": 1.0, "mrr": 1.0}


def test_ndcg_discounts_by_the_log_of_the_rank():
    metrics = ranking_metrics([["x", "y", "a"]], [{"a"}])
    assert metrics["ndcg@5"] == pytest.approx(1 / math.log2(4))


def test_ndcg_with_two_relevant_pages_uses_the_ideal_of_two():
    metrics = ranking_metrics([["a", "x", "b"]], [{"a", "b"}])
    ideal = 1 + 1 / math.log2(3)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)


def test_a_page_below_five_counts_only_in_mrr():
    metrics = ranking_metrics([["1", "2", "3", "4", "5", "a"]], [{"a"}])
    assert (metrics["recall@5"], metrics["ndcg@5"], metrics["mrr"]) == (0.0, 0.0, 1 / 6)


def test_exact_match_ignores_case_spaces_and_outer_punctuation():
    assert exact_match("  The Total:  $42. ", ["the total: $42"]) == 1.0


def test_exact_match_accepts_any_reference():
    assert exact_match("EMEA", ["Europe", "emea"]) == 1.0


def test_anls_is_one_minus_the_normalised_edit_distance():
    assert anls("abcdez", ["abcdef"]) == pytest.approx(5 / 6)


def test_anls_is_zero_from_half_the_length_on():
    assert anls("abcxyz", ["abcdef"]) == 0.0


def test_answer_metrics_average_over_questions():
    assert answer_metrics(["red", "blu"], [["red"], ["blue"]]) == {
        "exact_match": 0.5,
        "anls": pytest.approx((1 + 0.75) / 2),
    }


def test_the_comparison_is_written_as_json(tmp_path):
    comparison = Comparison({"mrr": 0.25}, {"mrr": 0.5}, metrics=("mrr",), details={"pairs": 3})
    written = json.loads(comparison.write(tmp_path / "metrics.json").read_text())
    assert written == {"before": {"mrr": 0.25}, "after": {"mrr": 0.5}, "pairs": 3}


def test_the_table_shows_the_change():
    table = Comparison({"mrr": 0.25}, {"mrr": 0.75}, metrics=("mrr",)).table()
    assert table.splitlines()[1].split() == ["mrr", "0.250", "0.750", "+0.500"]
