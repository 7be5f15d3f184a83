"""Documents as files on disk: byte-identical copies, two files of one name, files deleted from
disk (``index --prune``), an interrupted ``index`` and the incomplete documents it leaves.
"""

from __future__ import annotations

import json
import shutil

import pytest
from cli_runner import PAGE_SIZE_PT, run_cli

from llama_index_vlm.cli.indexing import find_copies
from llama_index_vlm.store import StoredDocument


def _pdf(path, lines):
    from pdfs import write_text_pdf

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_pdf(path, lines, width_pt=PAGE_SIZE_PT[0], height_pt=PAGE_SIZE_PT[1])


def _library(root, colpali):
    """A folder with a/report.pdf, its copy a/saved-copy.pdf (listed after it), another
    b/report.pdf and c/gone.pdf, indexed.
    """
    original = _pdf(root / "docs" / "a" / "report.pdf", ["Revenue 2023", "Warranty"])
    shutil.copyfile(original, root / "docs" / "a" / "saved-copy.pdf")
    _pdf(root / "docs" / "b" / "report.pdf", ["Installation"])
    _pdf(root / "docs" / "c" / "gone.pdf", ["Old notes"])
    store = root / "index"
    status, out, err = run_cli(
        "index", root / "docs", "--store", store, "--model", colpali, "--dpi", 72, "--no-progress"
    )
    assert status == 0, err
    return {"root": root, "docs": root / "docs", "store": store, "index_out": out}


@pytest.fixture(scope="module")
def library(tiny_checkpoint, tmp_path_factory):
    """The library, indexed once for the tests that only read it."""
    return _library(tmp_path_factory.mktemp("library"), tiny_checkpoint("colpali"))


@pytest.fixture
def library_copy(tiny_checkpoint, tmp_path):
    """The library indexed afresh, to change: its files' paths are in the index."""
    return _library(tmp_path, tiny_checkpoint("colpali"))


# --------------------------------------------------------------------------- copies


def test_a_copy_is_reported_as_the_same_content(library):
    docs = library["docs"]
    assert (
        f"  {docs / 'a' / 'saved-copy.pdf'}: same content as report.pdf "
        f"({docs / 'a' / 'report.pdf'}): stored once, found by either name"
    ) in library["index_out"]


def test_a_copy_is_stored_once(library):
    info = json.loads(run_cli("info", "--store", library["store"], "--json")[1])
    assert info["pages"] == 4 and len(info["documents"]) == 3


def test_info_lists_a_copy_under_its_document(library):
    _, out, _ = run_cli("info", "--store", library["store"])
    lines = out.splitlines()
    original = next(i for i, line in enumerate(lines) if line.endswith("a/report.pdf"))
    assert lines[original + 1].strip() == f"same content: {library['docs']}/a/saved-copy.pdf"


def test_a_filter_on_a_copys_name_finds_its_pages(library):
    status, out, _ = run_cli(
        "search", "q", "--store", library["store"], "--json", "--filter",
        "file_name=saved-copy.pdf",
    )  # fmt: skip
    assert status == 0
    assert {hit["file_path"] for hit in json.loads(out)} == {str(library["docs"] / "a/report.pdf")}


def test_delete_by_a_copys_name_deletes_its_document(library_copy):
    status, out, _ = run_cli("delete", "saved-copy.pdf", "--store", library_copy["store"])
    assert status == 0 and out.startswith(f"deleted 2 pages of {library_copy['docs']}")


def test_a_renamed_file_is_not_a_copy():
    # The stored file is gone: the new name is where the document lives now.
    stored = [StoredDocument("d", "old.pdf", "/nowhere/old.pdf", 1, 1)]
    assert find_copies(["/docs/new.pdf"], {"/docs/new.pdf": "d"}, stored) == []


# --------------------------------------------------------------------------- shared names


def test_search_shows_the_path_when_two_documents_share_a_file_name(library):
    status, out, _ = run_cli("search", "q", "--store", library["store"], "-k", 4)
    assert status == 0
    names = {line.split(", page")[0].split(". ", 1)[1] for line in out.splitlines()}
    docs = library["docs"]
    assert names == {str(docs / "a" / "report.pdf"), str(docs / "b" / "report.pdf"), "gone.pdf"}


# --------------------------------------------------------------------------- pruning


def test_index_counts_documents_whose_files_are_gone(library_copy):
    (library_copy["docs"] / "c" / "gone.pdf").unlink()
    status, out, _ = run_cli("index", library_copy["docs"], "--store", library_copy["store"])
    assert status == 0
    assert (
        "  1 indexed document under these paths is no longer on disk; `--prune` deletes it" in out
    )
    assert out.endswith(": 4 pages, 3 documents\n")


def test_index_prune_deletes_documents_whose_files_are_gone(library_copy):
    (library_copy["docs"] / "c" / "gone.pdf").unlink()
    status, out, _ = run_cli(
        "index", library_copy["docs"], "--store", library_copy["store"], "--prune"
    )
    assert status == 0
    assert f"  pruned {library_copy['docs'] / 'c' / 'gone.pdf'} (1 page)" in out
    assert out.endswith(": 3 pages, 2 documents\n")


def test_index_prune_takes_a_deleted_folder(library_copy):
    shutil.rmtree(library_copy["docs"] / "b")
    status, out, _ = run_cli(
        "index", library_copy["docs"] / "b", "--store", library_copy["store"], "--prune"
    )
    assert status == 0 and f"  pruned {library_copy['docs'] / 'b' / 'report.pdf'}" in out


def test_prune_keeps_a_document_whose_copy_is_still_there(library_copy):
    (library_copy["docs"] / "a" / "report.pdf").unlink()
    status, out, _ = run_cli(
        "index", library_copy["docs"], "--store", library_copy["store"], "--prune"
    )
    assert status == 0 and "pruned" not in out


# --------------------------------------------------------------------------- interrupted


@pytest.fixture
def interrupted(library_copy, tiny_checkpoint, monkeypatch):
    """A new 3-page file indexed one page per batch, with Ctrl-C during the second batch."""
    from llama_index_vlm.encoder import ColPaliEncoder

    new = _pdf(library_copy["docs"] / "new.pdf", ["one", "two", "three"])
    embed = ColPaliEncoder.embed_images
    calls = []

    def embed_then_stop(self, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return embed(self, images, *args, **kwargs)

    monkeypatch.setattr(ColPaliEncoder, "embed_images", embed_then_stop)
    result = run_cli(
        "index", new, "--store", library_copy["store"], "--batch-size", 1, "--dpi", 72,
        "--no-progress",
    )  # fmt: skip
    return {**library_copy, "run": result}


def test_an_interrupted_index_says_what_it_kept_in_one_line(interrupted):
    status, out, _ = interrupted["run"]
    assert status == 130
    assert out == (
        f"interrupted: the batches committed before the stop are kept; the index at "
        f"{interrupted['store']} holds 5 pages (4 before) of 4 documents, 1 of them "
        "incomplete; run the same command again to finish\n"
    )


def test_info_marks_an_incompletely_indexed_document(interrupted):
    _, out, _ = run_cli("info", "--store", interrupted["store"])
    assert "documents  4 (1 incomplete)" in out
    (line,) = [line for line in out.splitlines() if "new.pdf" in line]
    assert line.endswith(
        "new.pdf  (incomplete: 1 of 3 pages; `llama-index-vlm index` it again to finish)"
    )


def test_info_json_marks_an_incompletely_indexed_document(interrupted):
    info = json.loads(run_cli("info", "--store", interrupted["store"], "--json")[1])
    (new,) = [document for document in info["documents"] if document["file_name"] == "new.pdf"]
    assert (new["pages"], new["page_count"], new["complete"]) == (1, 3, False)
