"""Which files the reader reads (reader/files.py): folder walks and explicit paths."""

from __future__ import annotations

import os

import pytest
from pdfs import write_image_pdf
from PIL import Image

from llama_index_vlm.reader import PDFPageReader

from .page_pixels import GREEN


@pytest.fixture
def tree(tmp_path):
    """A folder of PDFs and an image in subfolders, with hidden entries, a text file, a link
    cycle and a dangling link.
    """
    root = tmp_path / "docs"
    (root / "b").mkdir(parents=True)
    (root / "b" / "inner").mkdir()
    (root / ".git").mkdir()
    write_image_pdf(root / "c.pdf", 1)
    write_image_pdf(root / "a.pdf", 1, size_px=(10, 10))
    write_image_pdf(root / "b" / "z.pdf", 1, size_px=(11, 11))
    write_image_pdf(root / "b" / "inner" / "y.pdf", 1, size_px=(12, 12))
    Image.new("RGB", (5, 5), GREEN).save(root / "b" / "scan.PNG")
    write_image_pdf(root / ".hidden.pdf", 1, size_px=(13, 13))
    write_image_pdf(root / ".git" / "x.pdf", 1, size_px=(14, 14))
    (root / "notes.txt").write_text("not a page")
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)  # a link cycle
    (root / "dangling.pdf").symlink_to(root / "nowhere.pdf")
    return root


def test_a_folder_is_walked_sorted_recursively_skipping_hidden_and_other_files(tree):
    relative = [str(path.relative_to(tree)) for path in PDFPageReader().list_files(tree)]
    assert relative == ["a.pdf", "b/inner/y.pdf", "b/scan.PNG", "b/z.pdf", "c.pdf"]


def test_a_folder_is_read_in_walk_order(tree):
    names = [doc.metadata["file_name"] for doc in PDFPageReader(dpi=10).load_data(str(tree))]
    assert names == ["a.pdf", "y.pdf", "scan.PNG", "z.pdf", "c.pdf"]


@pytest.mark.skipif(os.name != "posix", reason="named pipes and /dev/zero are POSIX")
def test_a_folder_walk_passes_over_pipes_and_devices(tmp_path):
    write_image_pdf(tmp_path / "good.pdf", 1)
    os.mkfifo(tmp_path / "pipe.pdf")  # reading it would block forever
    os.symlink("/dev/zero", tmp_path / "zeros.pdf")  # reading it would never end
    assert PDFPageReader().list_files(tmp_path) == [tmp_path / "good.pdf"]


def test_explicit_paths_keep_their_order_and_duplicates_are_read_once(tmp_path):
    first = write_image_pdf(tmp_path / "first.pdf", 1)
    second = write_image_pdf(tmp_path / "second.pdf", 2)
    files = PDFPageReader(dpi=10).list_files([second, tmp_path, first])
    assert files == [second, first]
