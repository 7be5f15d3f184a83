"""``index --text`` and ``search --hybrid`` / ``ask --hybrid``: pages ranked by image and text."""

from __future__ import annotations

import pytest
from cli_runner import PAGE_SIZE_PT, run_cli, search_lines


@pytest.fixture(scope="module")
def text_indexed(tmp_path_factory, tiny_checkpoint):
    """report.pdf (3 pages, the second holding part number XK-4471-B) indexed with --text."""
    from pdfs import write_text_pdf

    root = tmp_path_factory.mktemp("cli_hybrid")
    pdf = write_text_pdf(
        root / "report.pdf",
        ["Revenue 2023", ["Spare parts", "XK-4471-B pump"], "Outlook"],
        width_pt=PAGE_SIZE_PT[0],
        height_pt=PAGE_SIZE_PT[1],
    )
    store = root / "vlm_index"
    model = tiny_checkpoint("colpali")
    status, _, err = run_cli(
        "index", pdf, "--store", store, "--model", model, "--dpi", 72, "--text"
    )
    assert status == 0, err
    return store


def test_search_hybrid_puts_the_page_with_the_part_number_first(text_indexed):
    status, out, _ = run_cli("search", "XK-4471-B", "--store", text_indexed, "--hybrid", "-k", 3)
    assert status == 0
    rows = search_lines(out)
    assert rows[0][1] == 2 and sorted(page for _, page, _, _ in rows) == [1, 2, 3]


def test_ask_hybrid_answers_from_the_fused_pages(text_indexed, tiny_checkpoint):
    llava = tiny_checkpoint("llava")
    status, out, _ = run_cli(
        "ask", "XK-4471-B?", "--store", text_indexed, "--vlm", llava, "--hybrid", "-k", 1,
        "--max-new-tokens", 2,
    )  # fmt: skip
    assert status == 0 and "report.pdf, page 2" in out
