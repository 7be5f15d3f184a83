"""``llama-index-vlm index`` (llama_index_vlm.cli.indexing)."""

from __future__ import annotations

import pytest
from cli_runner import run_cli, search_lines


def test_index_prints_summary_and_failed_file_and_exits_1(indexed):
    status, out, err = indexed["index_run"]
    assert status == 1
    assert "3 pages added, 0 unchanged, 1 file failed" in out
    assert f"not indexed: {indexed['bad']}: not a PDF file" in out
    assert "index " in out and "3 pages, 1 document" in out
    assert "Traceback" not in err


def test_index_warnings_and_progress_go_to_stderr(indexed):
    _, out, err = indexed["index_run"]
    assert f"warning: not indexed: {indexed['bad']}" in err
    assert "Indexing" in err and "Indexing" not in out


def test_reindex_skips_unchanged_pages_with_the_stores_own_model(indexed):
    # No --model: the model recorded in the store's fingerprint is used.
    status, out, _ = run_cli("index", indexed["pdf"], "--store", indexed["store"], "--dpi", 72)
    assert status == 0
    assert out.startswith("0 pages added, 3 unchanged")


@pytest.fixture(scope="module")
def pooled(indexed, tmp_path_factory):
    """report.pdf indexed with --pool-factor 2 into its own store: (index argv, its run)."""
    store = tmp_path_factory.mktemp("pooled") / "index"
    args = ["index", indexed["pdf"], "--store", store, "--model", indexed["colpali"], "--dpi", 72]
    return args, run_cli(*args, "--pool-factor", 2, "--no-progress")


def test_index_with_a_pool_factor_stores_pooled_pages(pooled):
    args, (status, out, err) = pooled
    assert status == 0, err
    assert out.startswith("3 pages added")
    status, out, _ = run_cli("info", "--store", args[3])
    assert status == 0 and ", pool factor 2)" in out


def test_a_pooled_index_is_searched_like_any_other(pooled):
    args, _ = pooled
    status, out, _ = run_cli("search", "revenue 2023", "--store", args[3], "-k", 3)
    assert status == 0 and len(search_lines(out)) == 3


def test_a_pooled_index_refuses_another_pool_factor(pooled):
    args, _ = pooled
    status, _, err = run_cli(*args, "--pool-factor", 4)
    assert status == 2 and "pooled with pool_factor=2" in err and "Traceback" not in err


def test_a_pool_factor_below_1_is_refused(pooled):
    args, _ = pooled
    status, _, err = run_cli(*args, "--pool-factor", "0.5")
    assert status == 2 and "--pool-factor: must be at least 1" in err
