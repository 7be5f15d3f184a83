"""Reciprocal rank fusion (llama_index_vlm.search.fusion)."""

from __future__ import annotations

import pytest

from llama_index_vlm.search.fusion import RRF_K, reciprocal_rank_fusion


def test_an_item_in_both_rankings_appears_once_with_both_contributions():
    fused = dict(reciprocal_rank_fusion([["a", "b"], ["b", "c"]]))
    assert list(fused) == ["b", "a", "c"]
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_an_item_repeated_within_one_ranking_counts_at_its_best_rank():
    assert reciprocal_rank_fusion([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", 0.5)]


def test_empty_rankings_fuse_to_nothing():
    assert reciprocal_rank_fusion([[], []]) == []


def test_a_negative_offset_is_refused():
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([["a"]], k=-1)
