"""Text from files and models printed safely (llama_index_vlm.cli.output): control characters,
bidi overrides and undecodable bytes are escaped in human-readable output, never in ``--json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cli_runner import PAGE_SIZE_PT, run_cli

from llama_index_vlm.cli.output import escaped, shared_file_names
from llama_index_vlm.store import StoredDocument

# A file name that, printed raw, would erase the line and print a fake first result.
FAKE_RESULT_NAME = "x\x1b[2K\r1. fake.pdf, page 1  score 99.00  page_id forged\n.pdf"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("report\x1b[31m.pdf", "report\\x1b[31m.pdf"),
        ("two\nlines", "two\\nlines"),
        ("tab\there", "tab\\there"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("caf\udce9.pdf", "caf\\xe9.pdf"),
        ("line\u2028separator", "line\\u2028separator"),
    ],
    ids=["esc", "newline", "tab", "bidi-override", "c0-del-c1", "undecodable-byte", "separator"],
)
def test_characters_that_act_on_a_terminal_are_escaped(text, shown):
    assert escaped(text) == shown


def test_readable_text_is_left_as_it_is():
    assert escaped("Rapport annuel 2023 — naïve 収入 📄 a\u200db") == (
        "Rapport annuel 2023 — naïve 収入 📄 a\u200db"
    )


def test_an_answer_keeps_its_own_lines():
    assert escaped("one\ntwo\x1b[0m", keep="\n\t") == "one\ntwo\\x1b[0m"


def test_a_file_name_shared_by_two_documents_is_found():
    documents = [
        StoredDocument("a", "report.pdf", "/a/report.pdf", 1, 1),
        StoredDocument("b", "report.pdf", "/b/report.pdf", 1, 1),
        StoredDocument("c", "other.pdf", "/c/other.pdf", 1, 1),
    ]
    assert shared_file_names(documents) == {"report.pdf"}


@pytest.fixture(scope="module")
def hostile_index(tiny_checkpoint, tmp_path_factory):
    """A store holding one PDF whose file name carries an ESC sequence and a fake result."""
    from pdfs import write_text_pdf

    root = tmp_path_factory.mktemp("hostile_names")
    pdf = write_text_pdf(root / FAKE_RESULT_NAME, ["Revenue"], width_pt=PAGE_SIZE_PT[0],
                         height_pt=PAGE_SIZE_PT[1])  # fmt: skip
    store = root / "index"
    status, out, err = run_cli(
        "index", pdf, "--store", store, "--model", tiny_checkpoint("colpali"), "--dpi", 72,
        "--no-progress",
    )  # fmt: skip
    assert status == 0, err
    return {"store": store, "pdf": pdf}


def test_a_hostile_file_name_cannot_fake_a_search_result(hostile_index):
    status, out, _ = run_cli("search", "revenue", "--store", hostile_index["store"])
    assert status == 0
    (line,) = out.splitlines()
    assert "\x1b" not in out and "\r" not in out
    assert re.fullmatch(r"1\. x\\x1b\[2K\\r1\. fake\.pdf, .*\\n\.pdf, page 1  score .*", line)


def test_a_hostile_file_name_is_escaped_by_info(hostile_index):
    _, out, _ = run_cli("info", "--store", hostile_index["store"])
    assert "\x1b" not in out and "\\x1b[2K\\r1. fake.pdf" in out


def test_json_output_keeps_the_file_name_exact(hostile_index):
    _, out, _ = run_cli("search", "revenue", "--store", hostile_index["store"], "--json")
    assert json.loads(out)[0]["file_name"] == FAKE_RESULT_NAME


def test_a_store_path_that_is_not_utf8_is_one_error_line(tmp_path):
    store = os.fsdecode(os.fsencode(tmp_path) + b"/index\xff")
    status, out, err = run_cli("info", "--store", store)
    assert (status, out) == (2, "")
    assert err == f"error: --store {tmp_path}/index\\xff: the path is not valid UTF-8, which " \
        "LanceDB cannot open; rename the folder or choose another --store\n"  # fmt: skip


def test_an_unreachable_object_store_is_one_error_line(monkeypatch, tmp_path):
    import llama_index_vlm.store as store_package

    def unreachable(*args, **kwargs):
        raise RuntimeError("lance error: LanceError(IO): Generic S3 error: no route\n  at aws.rs")

    monkeypatch.setattr(store_package, "LanceDBPageStore", unreachable)
    status, _, err = run_cli("info", "--store", "s3://bucket/index")
    assert status == 1
    assert err == (
        "error: cannot open the index at s3://bucket/index: lance error: LanceError(IO): "
        "Generic S3 error: no route\n"
    )


def test_a_closed_stdout_ends_quietly(small_store):
    # `llama-index-vlm info | head -0`: the reader is gone before the first line is written.
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_index_vlm.cli", "info", "--store", small_store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""
