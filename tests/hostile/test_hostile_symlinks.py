"""Symbolic links in an indexed folder (issue 13): a link pointing outside the folder is not
followed unless asked (``follow_symlinks=True``, ``index --follow-symlinks``); a link inside
it, and a path named explicitly, are.
"""

from __future__ import annotations

import logging
import os

import pytest
from pdfs import write_numbered_pdf

from llama_index_vlm.reader import PDFPageReader


@pytest.fixture
def tree(tmp_path):
    """``inbox/`` (own.pdf, sub/deep.pdf, a link to sub/deep.pdf, links to ``outside/`` and to
    ``outside/secret.pdf``) next to ``outside/`` (secret.pdf).
    """
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    write_numbered_pdf(inbox / "own.pdf", 1)
    write_numbered_pdf(inbox / "sub" / "deep.pdf", 1)
    write_numbered_pdf(outside / "secret.pdf", 1)
    os.symlink(inbox / "sub" / "deep.pdf", inbox / "inner-link.pdf")
    os.symlink(outside, inbox / "outer-folder")
    os.symlink(outside / "secret.pdf", inbox / "outer-file.pdf")
    os.symlink("../outside/secret.pdf", inbox / "relative-out.pdf")
    return inbox


def test_links_out_of_the_folder_are_not_followed_by_default(tree):
    names = sorted(path.name for path in PDFPageReader().list_files(tree))
    # inner-link.pdf and sub/deep.pdf are one file, kept once, at its first place.
    assert names == ["inner-link.pdf", "own.pdf"]


def test_a_skipped_link_is_named_in_a_warning(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm"):
        PDFPageReader().list_files(tree)
    skipped = [r.getMessage() for r in caplog.records if "points outside" in r.getMessage()]
    assert len(skipped) == 3
    assert all("follow_symlinks=True" in message for message in skipped)


def test_follow_symlinks_follows_links_out_of_the_folder(tree):
    names = sorted(path.name for path in PDFPageReader(follow_symlinks=True).list_files(tree))
    assert names == ["inner-link.pdf", "outer-file.pdf", "own.pdf"]  # secret.pdf once


def test_a_link_named_explicitly_is_followed(tree):
    (doc,) = PDFPageReader(dpi=10).load_data(tree / "outer-file.pdf")
    assert doc.metadata["file_name"] == "outer-file.pdf"


def test_a_folder_given_through_a_link_is_walked_inside_its_target(tree, tmp_path):
    os.symlink(tree, tmp_path / "inbox-link")
    names = sorted(path.name for path in PDFPageReader().list_files(tmp_path / "inbox-link"))
    assert names == ["inner-link.pdf", "own.pdf"]
