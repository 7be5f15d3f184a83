"""The reader's limits on the command line (issue 13): ``index --max-pages``,
``--render-timeout``, ``--render-memory-limit`` and ``--follow-symlinks``.
"""

from __future__ import annotations

import contextlib
import io
import os

from pdfs import write_numbered_pdf

from llama_index_vlm.cli import main
from llama_index_vlm.cli.parser import build_parser
from llama_index_vlm.store import LanceDBPageStore


def _run_cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def test_the_limits_default_to_the_readers_defaults():
    args = build_parser().parse_args(["index", "docs/"])
    limits = (args.render_timeout, args.render_memory_limit, args.max_pages, args.follow_symlinks)
    assert limits == (30.0, 2048, 10_000, False)


def test_a_file_over_max_pages_is_reported_and_the_others_indexed(tmp_path, tiny_checkpoint):
    write_numbered_pdf(tmp_path / "docs" / "long.pdf", 3)
    write_numbered_pdf(tmp_path / "docs" / "short.pdf", 1)
    store = tmp_path / "index"
    status, out, _ = _run_cli(
        "index", tmp_path / "docs", "--store", store, "--model", tiny_checkpoint("colpali"),
        "--dpi", 36, "--max-pages", 2, "--render-timeout", 20, "--render-memory-limit", 1024,
        "--no-progress",
    )  # fmt: skip
    assert status == 1
    assert "long.pdf: 3 pages to read, over the limit of 2 pages per file" in out
    assert [d.file_name for d in LanceDBPageStore(uri=str(store)).documents()] == ["short.pdf"]


def test_follow_symlinks_indexes_a_file_linked_from_outside(tmp_path, tiny_checkpoint):
    outside = write_numbered_pdf(tmp_path / "outside" / "shared.pdf", 1)
    write_numbered_pdf(tmp_path / "docs" / "own.pdf", 1)
    os.symlink(outside, tmp_path / "docs" / "linked.pdf")
    model = tiny_checkpoint("colpali")
    for flags, expected in (((), ["own.pdf"]), (("--follow-symlinks",), ["linked.pdf", "own.pdf"])):
        store = tmp_path / f"index{len(flags)}"
        _run_cli(
            "index", tmp_path / "docs", "--store", store, "--model", model, "--dpi", 36, *flags
        )
        files = sorted(d.file_name for d in LanceDBPageStore(uri=str(store)).documents())
        assert files == expected
