"""``llama-index-vlm search`` and ``ask`` (llama_index_vlm.cli.querying)."""

from __future__ import annotations

import json

import pytest
from cli_runner import CITED_LINE, run_cli, search_lines

# --------------------------------------------------------------------------- search


def test_search_ranks_every_page(indexed):
    status, out, _ = run_cli("search", "revenue 2023", "--store", indexed["store"], "-k", 5)
    assert status == 0
    rows = search_lines(out)
    assert [rank for rank, *_ in rows] == [1, 2, 3]
    assert sorted(page for _, page, _, _ in rows) == [1, 2, 3]
    scores = [score for _, _, score, _ in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(page_id.endswith(f"-p{page}") for _, page, _, page_id in rows)


def test_search_filter_narrows_the_pages(indexed):
    store = indexed["store"]
    status, out, _ = run_cli("search", "revenue", "--store", store, "--filter", "page_number=3")
    assert status == 0
    assert [page for _, page, _, _ in search_lines(out)] == [3]


def test_search_json_lists_the_page_fields_of_pages_matching_every_filter(indexed):
    status, out, _ = run_cli(
        "search", "q", "--store", indexed["store"], "--json",
        "--filter", "file_name=report.pdf", "--filter", "page_number=2",
    )  # fmt: skip
    assert status == 0
    (hit,) = json.loads(out)
    assert (hit["rank"], hit["file_name"], hit["page_number"]) == (1, "report.pdf", 2)
    assert hit["page_id"].endswith("-p2") and hit["file_path"] == str(indexed["pdf"])


def test_search_says_when_no_page_matches_the_filters(indexed):
    store = indexed["store"]
    status, out, _ = run_cli("search", "q", "--store", store, "--filter", "file_name=other.pdf")
    assert (status, out) == (0, "no pages match the filters\n")


# --------------------------------------------------------------------------- ask


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_ask_prints_answer_and_cited_pages(indexed, tiny_checkpoint, stream):
    argv = ["ask", "What was the revenue?", "--store", indexed["store"], "-k", 2]
    argv += ["--vlm", tiny_checkpoint("llava"), "--max-new-tokens", 3]
    status, out, err = run_cli(*argv, *(["--stream"] if stream else []))
    assert status == 0, err
    answer, separator, cited = out.partition("\n\nCited pages:\n")
    assert separator and answer.strip("\n")
    lines = cited.splitlines()
    assert len(lines) == 2
    assert all(CITED_LINE.match(line) for line in lines), lines


def test_ask_with_a_filter_cites_only_matching_pages(indexed, tiny_checkpoint):
    status, out, _ = run_cli(
        "ask", "Which page is about warranty?", "--store", indexed["store"],
        "--vlm", tiny_checkpoint("llava"), "--max-new-tokens", 2, "--filter", "page_number=2",
    )  # fmt: skip
    assert status == 0
    cited = out.split("\n\nCited pages:\n")[1].splitlines()
    assert len(cited) == 1 and "report.pdf, page 2 " in cited[0]


def test_ask_json_gives_the_question_answer_and_pages(indexed, tiny_checkpoint):
    status, out, _ = run_cli(
        "ask", "What was the revenue?", "--store", indexed["store"], "-k", 2, "--json",
        "--vlm", tiny_checkpoint("llava"), "--max-new-tokens", 3,
    )  # fmt: skip
    assert status == 0
    answer = json.loads(out)
    assert answer["question"] == "What was the revenue?" and isinstance(answer["answer"], str)
    assert [page["rank"] for page in answer["pages"]] == [1, 2]
    assert {page["file_name"] for page in answer["pages"]} == {"report.pdf"}


def test_ask_json_and_stream_exclude_each_other(indexed):
    status, _, err = run_cli("ask", "q", "--store", indexed["store"], "--json", "--stream")
    assert status == 2 and "not allowed with argument" in err


def test_ask_with_tiny_checkpoints_says_once_that_they_are_meaningless(indexed, tiny_checkpoint):
    _, _, err = run_cli(
        "ask", "What?", "--store", indexed["store"], "--vlm", tiny_checkpoint("llava"),
        "--max-new-tokens", 2,
    )  # fmt: skip
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {indexed['colpali']}, {tiny_checkpoint('llava')} are tiny test checkpoints with "
        "random weights (llama_index_vlm.testing): their answers, rankings and maps are "
        "meaningless"
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_empty_answer_is_shown_as_such(stream, capsys):
    from llama_index_vlm.cli.querying import EMPTY_ANSWER, _print_answer

    response = type(
        "Response", (), {"__str__": lambda self: " ", "response_gen": iter(["", " "])}
    )()
    _print_answer(response, stream=stream)
    assert capsys.readouterr().out.endswith(f"{EMPTY_ANSWER}\n")


def test_an_answer_keeps_its_lines_and_loses_its_escape_sequences(capsys):
    from llama_index_vlm.cli.querying import _print_answer

    response = type("Response", (), {"__str__": lambda self: "Revenue:\n\x1b[2J12 M"})()
    _print_answer(response, stream=False)
    assert capsys.readouterr().out == "Revenue:\n\\x1b[2J12 M\n"
