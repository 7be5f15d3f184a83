"""What the commands share (llama_index_vlm.cli.common): opening the index, checking the words
given, typing ``--filter`` values.
"""

from __future__ import annotations

import pytest
from cli_runner import run_cli

from llama_index_vlm.cli.common import filter_value
from llama_index_vlm.errors import UsageError


def test_filter_values_of_page_fields_take_the_fields_type():
    assert filter_value("page_number", "3") == 3
    assert isinstance(filter_value("page_number", "3"), int)
    assert filter_value("file_name", "2023.pdf") == "2023.pdf"
    assert filter_value("doc_id", "123") == "123"
    assert filter_value("dpi", "144") == 144.0


def test_filter_values_of_other_keys_are_typed_by_their_look():
    assert filter_value("year", "2023") == 2023
    assert filter_value("ratio", "0.5") == 0.5
    assert filter_value("author", "Ada Lovelace") == "Ada Lovelace"


def test_quotes_make_a_filter_value_text():
    assert filter_value("year", '"2023"') == "2023"


def test_a_number_field_refuses_a_value_that_is_no_number():
    with pytest.raises(UsageError, match="page_number holds numbers"):
        filter_value("page_number", "three")


def test_missing_store_says_how_to_make_one(tmp_path):
    status, out, err = run_cli("search", "q", "--store", tmp_path / "nothing")
    assert status == 2 and out == ""
    assert err == (
        f"error: no index at {tmp_path / 'nothing'}; run `llama-index-vlm index PATH "
        f"--store {tmp_path / 'nothing'}` first\n"
    )


def test_asking_about_a_missing_store_does_not_create_one(tmp_path):
    run_cli("search", "q", "--store", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_missing_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli("ask", "What?")
    assert status == 2
    assert err == "error: no index at ./vlm_index; run `llama-index-vlm index PATH` first\n"


@pytest.mark.parametrize("command", ["ask", "search"])
def test_empty_question_is_refused_before_loading_models(indexed, command):
    status, _, err = run_cli(command, "   ", "--store", indexed["store"])
    assert status == 2
    assert (
        err == f"error: the {'question' if command == 'ask' else 'query'} is empty; "
        "write it in words\n"
    )
