"""Running the command line in-process for the CLI tests, and reading what it printed."""

from __future__ import annotations

import contextlib
import io
import re

from llama_index_vlm.cli import main

PAGE_SIZE_PT = (300, 400)  # rendered at --dpi 72: one pixel per point
CITED_LINE = re.compile(r"^  \d\. report\.pdf, page [123] \(score -?\d+\.\d\d\)$")
SEARCH_LINE = re.compile(r"^(\d)\. report\.pdf, page ([123])  score (-?\d+\.\d\d)  page_id (\S+)$")


def run_cli(*argv: object) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def search_lines(out: str) -> list[tuple[int, int, float, str]]:
    """(rank, page number, score, page id) of each line ``search`` printed."""
    rows = []
    for line in out.splitlines():
        match = SEARCH_LINE.match(line)
        assert match, f"unexpected search output line: {line!r}"
        rank, page, score, page_id = match.groups()
        rows.append((int(rank), int(page), float(score), page_id))
    return rows
