"""A full disk mid-file (issue 13): a file is stored whole or not at all.

The store lives on a real tmpfs of a few hundred KB (mounted here when the tests run as root,
as in this project's containers); without permission to mount, LanceDB's writer is made to
fail the same way, with ``ENOSPC`` from its third commit on.
"""

from __future__ import annotations

import errno
import io
import subprocess
from pathlib import Path

import pytest
from pdfs import page_ids_of, write_numbered_pdf
from PIL import Image

from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

_PAGES = 40


def _noise_tiff(path: Path, n_frames: int) -> Path:
    """A TIFF of ``n_frames`` noisy frames: pages of about 60 KB each once stored as JPEG."""
    frames = [Image.effect_noise((240, 240), 60 + i).convert("RGB") for i in range(n_frames)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    path.write_bytes(buffer.getvalue())
    return path


def _mount_tmpfs(mountpoint: Path, size: str) -> bool:
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    return done.returncode == 0


def _fail_commits_from(monkeypatch, first_failing: int) -> None:
    from lancedb.merge import LanceMergeInsertBuilder

    real_execute = LanceMergeInsertBuilder.execute
    calls: list[int] = []

    def execute(builder, *args, **kwargs):
        calls.append(1)
        if len(calls) >= first_failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_execute(builder, *args, **kwargs)

    monkeypatch.setattr(LanceMergeInsertBuilder, "execute", execute)


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory, colpali_encoder):
    """An ingest of a 2-page PDF, then a 40-page TIFF, in batches of 4, onto a 600 KB disk
    that fills mid-TIFF: ``(the StoreError it raised, the store reopened, the docs folder)``.
    """
    root = tmp_path_factory.mktemp("disk_full")
    docs = root / "docs"
    docs.mkdir()
    write_numbered_pdf(docs / "a-small.pdf", 2)
    _noise_tiff(docs / "b-scans.tif", _PAGES)
    disk = root / "small"
    mounted = _mount_tmpfs(disk, "600k")
    with pytest.MonkeyPatch.context() as monkeypatch:
        if not mounted:  # no permission to mount: LanceDB fails from its third commit on
            _fail_commits_from(monkeypatch, 3)
        store = LanceDBPageStore(uri=str(disk / "index"), auto_compact=False)
        reader = PDFPageReader(dpi=36)
        with pytest.raises(StoreError) as raised:
            ingest(docs, colpali_encoder, store, reader=reader, batch_size=4, show_progress=False)
    yield raised.value, LanceDBPageStore(uri=str(disk / "index"), auto_compact=False), docs
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_ingest_with_a_store_error(full_disk_run):
    error, _, _ = full_disk_run
    assert "nothing of this call was committed" in str(error)


def test_the_file_failing_on_a_full_disk_leaves_none_of_its_pages(full_disk_run):
    _, store, _ = full_disk_run
    assert {node.metadata["file_name"] for node in store.get_nodes()} == {"a-small.pdf"}


def test_the_files_completed_before_the_disk_filled_stay_whole(full_disk_run, check_whole_pages):
    _, store, docs = full_disk_run
    assert check_whole_pages(store) == page_ids_of(docs / "a-small.pdf", 2)


def test_pages_of_the_failed_file_were_committed_before_it_was_taken_back(
    full_disk_run, versions_page_ids
):
    # The case this guards: the file spanned batches, and its first ones were committed.
    _, store, docs = full_disk_run
    scans = page_ids_of(docs / "b-scans.tif", _PAGES)
    assert any(ids & scans for ids in versions_page_ids(store))
    assert not versions_page_ids(store)[-1] & scans
