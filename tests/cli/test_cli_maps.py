"""``llama-index-vlm maps`` (llama_index_vlm.cli.maps): similarity maps of a query on a page."""

from __future__ import annotations

import pytest
from cli_runner import PAGE_SIZE_PT, run_cli, search_lines
from PIL import Image


def test_maps_draws_one_panel_per_query_word(indexed):
    out_png = indexed["root"] / "maps.png"
    status, out, err = run_cli(
        "maps", "revenue 2023", "--store", indexed["store"], "--page", "report.pdf:1",
        "--out", out_png,
    )  # fmt: skip
    assert status == 0, err
    words = [line.split()[2] for line in out.splitlines() if line.startswith("  word ")]
    assert words == ["revenue", "2023"]
    panel_height = round(320 * PAGE_SIZE_PT[1] / PAGE_SIZE_PT[0])
    with Image.open(out_png) as image:
        assert image.format == "PNG"
        assert image.size == (2 * 320, panel_height + 18)


def test_maps_merges_the_sub_word_tokens_of_a_word(indexed):
    # The tiny tokenizer splits "What" into "ĠWh" "at": one word, one panel.
    status, out, _ = run_cli(
        "maps", "What", "--store", indexed["store"], "--page", "report.pdf:1",
        "--out", indexed["root"] / "what.png",
    )  # fmt: skip
    assert status == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  word ")]
    assert line.split()[2:4] == ["What", "(tokens"]


def test_maps_with_all_tokens_draws_the_prefix_and_padding_too(indexed):
    status, out, _ = run_cli(
        "maps", "revenue", "--store", indexed["store"], "--page", "report.pdf:1",
        "--out", indexed["root"] / "all.png", "--all-tokens",
    )  # fmt: skip
    assert status == 0
    assert len([line for line in out.splitlines() if line.startswith("  word ")]) > 10


def test_maps_of_one_token_covers_the_page(indexed):
    _, out, _ = run_cli("search", "q", "--store", indexed["store"], "--filter", "page_number=2")
    page_id = search_lines(out)[0][3]
    out_png = indexed["root"] / "token.png"
    status, out, _ = run_cli(
        "maps", "revenue", "--store", indexed["store"], "--page", page_id, "--out", out_png,
        "--token", 3,
    )  # fmt: skip
    assert status == 0
    assert "report.pdf, page 2" in out and "hottest region" in out
    assert len([line for line in out.splitlines() if line.startswith("  token ")]) == 1
    with Image.open(out_png) as image:
        assert image.size == PAGE_SIZE_PT


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--page", "report.pdf:9"], "no page 'report.pdf:9'"),
        (["--page", "nope"], "no page 'nope'"),
        (["--page", "report.pdf:1", "--token", "999"], "--token 999: the query has"),
    ],
    ids=["no-such-page-number", "no-such-page-id", "token-out-of-range"],
)
def test_maps_usage_errors(indexed, extra, message):
    out_png = indexed["root"] / "never.png"
    status, _, err = run_cli(
        "maps", "revenue", "--store", indexed["store"], "--out", out_png, *extra
    )
    assert status == 2
    assert message in err and "Traceback" not in err
    assert not out_png.exists()


def test_output_in_a_missing_folder_is_refused_up_front(indexed):
    out_png = indexed["root"] / "no" / "such" / "maps.png"
    status, _, err = run_cli(
        "maps", "q", "--store", indexed["store"], "--page", "report.pdf:1", "--out", out_png
    )
    assert status == 2
    assert err == f"error: --out {out_png}: there is no folder {out_png.parent}\n"


def test_unwritable_output_is_a_failure(indexed):
    out_png = indexed["root"] / "taken.png"
    out_png.mkdir()  # a folder where the image should go
    status, _, err = run_cli(
        "maps", "q", "--store", indexed["store"], "--page", "report.pdf:1", "--out", out_png
    )
    assert status == 1
    assert err.splitlines()[-1] == f"error: Is a directory: {out_png}"


def test_query_words_merge_a_character_split_over_byte_tokens():
    from llama_index_vlm.cli.maps import query_words

    # "Q: 収入" with 収 split over two byte tokens: their prefix decodes with a replacement char.
    decoded = ["Q:", "Q: \ufffd", "Q: 収", "Q: 収入", "Q: 収入<pad>"]
    words = query_words(decoded, "収入", skipped={4})
    assert [(word.text, word.tokens) for word in words] == [("収入", (1, 2, 3))]


def test_query_words_of_a_query_not_found_are_none():
    from llama_index_vlm.cli.maps import query_words

    assert query_words(["<bos>", "<bos>Q: other"], "revenue", skipped={0}) == []
