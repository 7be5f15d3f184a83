"""The ``llama-index-vlm`` command line, offline, with tiny checkpoints.

Commands run in-process through ``main(argv)`` (fast: models and imports are shared); one run
goes through the installed console script to cover the real entry point.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llama_index_vlm.cli import main
from llama_index_vlm.cli.common import filter_value
from llama_index_vlm.cli.parser import DEFAULT_ENCODER, DEFAULT_STORE, DEFAULT_VLM, build_parser
from llama_index_vlm.errors import UsageError

PAGE_SIZE_PT = (300, 400)  # rendered at --dpi 72: one pixel per point
COMMANDS = ["index", "ask", "search", "maps", "info", "delete"]
CITED_LINE = re.compile(r"^  \d\. report\.pdf, page [123] \(score -?\d+\.\d\d\)$")
SEARCH_LINE = re.compile(r"^(\d)\. report\.pdf, page ([123])  score (-?\d+\.\d\d)  page_id (\S+)$")


def run_cli(*argv: object) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_checkpoint):
    """A 3-page report.pdf and a text file named bad.pdf, indexed once into a fresh store."""
    from pdfs import write_text_pdf

    root = tmp_path_factory.mktemp("cli")
    pdf = write_text_pdf(
        root / "report.pdf",
        ["Revenue 2023", ["Warranty terms", "two years"], ["Installation", "Mount the bracket"]],
        width_pt=PAGE_SIZE_PT[0],
        height_pt=PAGE_SIZE_PT[1],
    )
    bad = root / "bad.pdf"
    bad.write_text("this is not a PDF")
    store = root / "vlm_index"
    colpali = tiny_checkpoint("colpali")
    status, out, err = run_cli(
        "index", pdf, bad, "--store", store, "--model", colpali, "--dpi", 72, "--batch-size", 2
    )
    return {
        "root": root,
        "pdf": pdf,
        "bad": bad,
        "store": store,
        "colpali": colpali,
        "index_run": (status, out, err),
    }


def search_lines(out: str) -> list[tuple[int, int, float, str]]:
    """(rank, page number, score, page id) of each line ``search`` printed."""
    rows = []
    for line in out.splitlines():
        match = SEARCH_LINE.match(line)
        assert match, f"unexpected search output line: {line!r}"
        rank, page, score, page_id = match.groups()
        rows.append((int(rank), int(page), float(score), page_id))
    return rows


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(command):
    argv = ["--help"] if command is None else [command, "--help"]
    status, out, err = run_cli(*argv)
    assert status == 0
    assert out.startswith(f"usage: llama-index-vlm{'' if command is None else ' ' + command}")
    assert "--store" in out or command is None


def test_parser_defaults_are_the_real_checkpoints():
    from llama_index_vlm.encoder import DEFAULT_ENCODER as LIBRARY_ENCODER
    from llama_index_vlm.vlm import DEFAULT_VLM as LIBRARY_VLM

    assert (DEFAULT_ENCODER, DEFAULT_VLM) == (LIBRARY_ENCODER, LIBRARY_VLM)
    args = build_parser().parse_args(["ask", "q"])
    assert (args.store, args.vlm, args.model, args.k) == (DEFAULT_STORE, DEFAULT_VLM, None, 3)
    assert DEFAULT_STORE == "./vlm_index"


def test_help_imports_no_heavy_module():
    code = (
        "import sys, contextlib, io\n"
        "from llama_index_vlm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['ask', '--help']) == 0\n"
        "heavy = ('torch', 'transformers', 'lancedb', 'llama_index')\n"
        "assert not [name for name in heavy if name in sys.modules], sys.modules.keys()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_command_prints_help_and_fails():
    status, _, err = run_cli()
    assert status == 2
    assert "usage: llama-index-vlm" in err


@pytest.mark.parametrize(
    "argv",
    [["search"], ["search", "q", "-k", "0"], ["index"], ["maps", "q", "--out", "x.png"]],
    ids=["no-query", "k-zero", "no-path", "no-page"],
)
def test_argument_errors_exit_2(argv):
    status, _, err = run_cli(*argv)
    assert status == 2
    assert "error:" in err and "Traceback" not in err


def test_filter_values_are_typed_by_field():
    assert filter_value("page_number", "3") == 3
    assert isinstance(filter_value("page_number", "3"), int)
    assert filter_value("file_name", "2023.pdf") == "2023.pdf"
    assert filter_value("doc_id", "123") == "123"
    assert filter_value("dpi", "144") == 144.0
    assert filter_value("year", "2023") == 2023
    assert filter_value("ratio", "0.5") == 0.5
    assert filter_value("year", '"2023"') == "2023"
    assert filter_value("author", "Ada Lovelace") == "Ada Lovelace"
    with pytest.raises(UsageError, match="page_number holds numbers"):
        filter_value("page_number", "three")


# --------------------------------------------------------------------------- index


def test_index_prints_summary_and_failed_file_and_exits_1(indexed):
    status, out, err = indexed["index_run"]
    assert status == 1
    assert "3 pages added, 0 unchanged, 1 file failed" in out
    assert f"not indexed: {indexed['bad']}: not a PDF file" in out
    assert "index " in out and "3 pages, 1 document" in out
    # Warnings and the progress bar go to stderr, results to stdout.
    assert f"warning: not indexed: {indexed['bad']}" in err
    assert "Indexing" in err and "Indexing" not in out
    assert "Traceback" not in err


def test_reindex_skips_unchanged_pages_with_the_stores_own_model(indexed):
    # No --model: the model recorded in the store's fingerprint is used.
    status, out, _ = run_cli("index", indexed["pdf"], "--store", indexed["store"], "--dpi", 72)
    assert status == 0
    assert out.startswith("0 pages added, 3 unchanged")


def test_index_with_a_pool_factor_stores_pooled_pages(indexed, tmp_path):
    store = tmp_path / "pooled"
    args = ["index", indexed["pdf"], "--store", store, "--model", indexed["colpali"], "--dpi", 72]
    status, out, err = run_cli(*args, "--pool-factor", 2, "--no-progress")
    assert status == 0, err
    assert out.startswith("3 pages added")
    status, out, _ = run_cli("info", "--store", store)
    assert status == 0 and ", pool factor 2)" in out
    status, out, _ = run_cli("search", "revenue 2023", "--store", store, "-k", 3)
    assert status == 0 and len(search_lines(out)) == 3
    status, _, err = run_cli(*args, "--pool-factor", 4)
    assert status == 2 and "pooled with pool_factor=2" in err and "Traceback" not in err
    status, _, err = run_cli(*args, "--pool-factor", "0.5")
    assert status == 2 and "--pool-factor: must be at least 1" in err


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


def test_search_filters(indexed):
    store = indexed["store"]
    status, out, _ = run_cli("search", "revenue", "--store", store, "--filter", "page_number=3")
    assert status == 0
    assert [page for _, page, _, _ in search_lines(out)] == [3]

    status, out, _ = run_cli(
        "search", "q", "--store", store, "--json",
        "--filter", "file_name=report.pdf", "--filter", "page_number=2",
    )  # fmt: skip
    assert status == 0
    (hit,) = json.loads(out)
    assert (hit["rank"], hit["file_name"], hit["page_number"]) == (1, "report.pdf", 2)
    assert hit["page_id"].endswith("-p2") and hit["file_path"] == str(indexed["pdf"])

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


# --------------------------------------------------------------------------- maps


def test_maps_draws_one_panel_per_query_token(indexed):
    out_png = indexed["root"] / "maps.png"
    status, out, err = run_cli(
        "maps", "revenue 2023", "--store", indexed["store"], "--page", "report.pdf:1",
        "--out", out_png,
    )  # fmt: skip
    assert status == 0, err
    tokens = [line for line in out.splitlines() if line.startswith("  token ")]
    assert tokens
    columns, rows = min(4, len(tokens)), -(-len(tokens) // 4)
    panel_height = round(320 * PAGE_SIZE_PT[1] / PAGE_SIZE_PT[0])
    with Image.open(out_png) as image:
        assert image.format == "PNG"
        assert image.size == (columns * 320, rows * (panel_height + 18))


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


# --------------------------------------------------------------------------- info, delete


def test_info(indexed):
    status, out, _ = run_cli("info", "--store", indexed["store"])
    assert status == 0
    assert re.search(r"^pages +3$", out, re.M) and re.search(r"^documents +1$", out, re.M)
    assert f"model      {indexed['colpali']} (ColPaliForRetrieval, 128-dim vectors" in out
    assert re.search(r"^disk size +\d+\.\d KiB$", out, re.M)
    assert str(indexed["pdf"]) in out

    status, out, _ = run_cli("info", "--store", indexed["store"], "--json")
    info = json.loads(out)
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(indexed["store"]))
    assert info["pages"] == 3 and info["version"] == store.version
    assert info["fingerprint"] == store.fingerprint
    assert info["fingerprint"]["model"] == str(indexed["colpali"])
    assert info["disk_bytes"] > 0
    (document,) = info["documents"]
    assert document["pages"] == 3 and document["file_name"] == "report.pdf"
    assert document["doc_id"] == store.doc_ids()[0]


def test_delete_by_file_name_and_by_doc_id(indexed, tmp_path):
    store = tmp_path / "copy"
    shutil.copytree(indexed["store"], store)
    doc_id = json.loads(run_cli("info", "--store", store, "--json")[1])["documents"][0]["doc_id"]

    status, _, err = run_cli("delete", "missing.pdf", "--store", store)
    assert status == 2 and "no document 'missing.pdf'" in err

    status, out, _ = run_cli("delete", "report.pdf", "--store", store)
    assert status == 0
    assert out == f"deleted 3 pages of {indexed['pdf']} (doc id {doc_id}); 0 pages left\n"
    assert json.loads(run_cli("info", "--store", store, "--json")[1])["pages"] == 0

    status, _, err = run_cli("delete", doc_id, "--store", store)
    assert status == 2  # gone already
    status, _, err = run_cli("search", "q", "--store", store)
    assert status == 2 and "holds no pages" in err


# --------------------------------------------------------------------------- errors


def test_missing_store_says_how_to_make_one(tmp_path):
    status, out, err = run_cli("search", "q", "--store", tmp_path / "nothing")
    assert status == 2 and out == ""
    assert err == (
        f"error: no index at {tmp_path / 'nothing'}; run `llama-index-vlm index PATH "
        f"--store {tmp_path / 'nothing'}` first\n"
    )
    assert not (tmp_path / "nothing").exists()  # asking does not create an empty index


def test_missing_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli("ask", "What?")
    assert status == 2
    assert err == "error: no index at ./vlm_index; run `llama-index-vlm index PATH` first\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--model", "empty_dir", "holds no config.json"),
        ("--model", "vidore/no-such-checkpoint-hf", "could not be fetched from the Hugging Face"),
        ("--model", "llava", "not a ColPali-family retriever"),
        ("--vlm", "colpali", "--vlm: "),
        ("--vlm", "vidore/no-such-vlm-hf", "pass a local directory"),
    ],
    ids=["empty-dir", "offline-hub-id", "wrong-family", "retriever-as-vlm", "offline-vlm"],
)
def test_bad_checkpoints_fail_without_traceback(
    indexed, tiny_checkpoint, tmp_path, monkeypatch, option, value, message
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty_dir").mkdir()
    value = {"empty_dir": tmp_path / "empty_dir"}.get(value, value)
    if value in ("llava", "colpali"):
        value = tiny_checkpoint(value)
    status, out, err = run_cli("ask", "What?", "--store", indexed["store"], option, value)
    assert status == 2 and out == ""
    # Loading a checkpoint may draw a progress bar first; the error is the last line.
    assert err.splitlines()[-1].startswith("error: ")
    assert message in err and "Traceback" not in err


def test_empty_question_is_refused_before_loading_models(indexed):
    for command in ("ask", "search"):
        status, _, err = run_cli(command, "   ", "--store", indexed["store"])
        assert status == 2
        assert (
            err == f"error: the {'question' if command == 'ask' else 'query'} is empty; "
            "write it in words\n"
        )


def test_another_model_is_refused_for_an_existing_index(indexed, tiny_checkpoint):
    status, _, err = run_cli(
        "search", "q", "--store", indexed["store"], "--model", tiny_checkpoint("colqwen2")
    )
    assert status == 2
    assert f"was built with {indexed['colpali']} (ColPaliForRetrieval" in err
    assert "leave out --model" in err


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


# --------------------------------------------------------------------------- console script


def console_script() -> str:
    script = Path(sys.executable).parent / "llama-index-vlm"
    if not script.exists():
        found = shutil.which("llama-index-vlm")
        if found is None:
            pytest.skip("the llama-index-vlm console script is not installed")
        return found
    return str(script)


def test_console_script_entry_point(tmp_path):
    # The installed script's exit status and streams; the commands' work is tested in-process.
    missing = subprocess.run(
        [console_script(), "search", "q", "--store", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"error: no index at {tmp_path / 'none'}; run `llama-index-vlm index PATH "
        f"--store {tmp_path / 'none'}` first\n"
    )
