"""Tests of ``ingest`` and ``ingest_documents``: bad inputs in a folder, idempotent re-runs,
changed files, a PDF failing mid-file, documents loaded beforehand, the progress bar, and the
errors that stop an ingest before it writes anything.

Every test runs the real reader, the tiny ColPali checkpoint and a LanceDB store on disk.
Faults are in test_ingest_faults.py (an encoder raising mid-batch) and
tests/stress/test_kill_ingest.py (SIGKILL at random moments).
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import ImageDocument
from pdfs import (
    page_ids_of,
    write_damaged_page_pdf,
    write_encrypted_pdf,
    write_numbered_pdf,
    write_truncated_pdf,
)
from PIL import Image

from llama_index_vlm.errors import EmptyInputError, InvalidRequestError, ModelMismatchError
from llama_index_vlm.images import decode_image
from llama_index_vlm.ingestion import FailedFile, IngestReport, ingest, ingest_documents
from llama_index_vlm.pages import doc_id_for_file, node_image
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.search import hierarchical_pool
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture
def embed_calls(monkeypatch, colpali_encoder) -> list[int]:
    """The number of images of each ``colpali_encoder.embed_images`` call, in order."""
    calls: list[int] = []
    real = colpali_encoder.embed_images

    def counting(images, *args, **kwargs):
        calls.append(len(images))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(colpali_encoder, "embed_images", counting)
    return calls


# ------------------------------------------------------------------------- bad inputs


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 20, 30))
    image.info["transparency"] = 0
    return image


def _truncated_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:300])  # header intact, pixel data cut short
    return path


@dataclass
class Inbox:
    """A folder of good and bad files, ingested once."""

    folder: Path
    good: dict[Path, int]  # file -> its number of pages
    bad: dict[str, str]  # file name -> what its failure reason says
    report: IngestReport
    store: LanceDBPageStore

    def expected_page_ids(self) -> set[str]:
        return set().union(*(page_ids_of(path, n) for path, n in self.good.items()))


def _write_inbox(folder: Path) -> tuple[dict[Path, int], dict[str, str]]:
    good = {
        write_numbered_pdf(folder / "a_report.pdf", 3): 3,
        write_numbered_pdf(folder / "sub" / "b_memo.pdf", 2): 2,
    }
    images = {
        "photo.jpg": Image.new("RGB", (64, 48), (10, 120, 200)),
        "cmyk.tiff": Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        "wide.png": Image.new("I;16", (40, 30), 40000),
        "palette.png": _palette_with_transparency(),
        "clear.png": Image.new("RGBA", (40, 30), (0, 0, 0, 0)),
    }
    for name, image in images.items():
        image.save(folder / name)
        good[folder / name] = 1
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "readme.pdf").write_text("This is a plain text file, not a PDF.\n" * 20)
    Image.new("RGB", (150, 150)).save(folder / "bomb.png")  # 1.1x the limit set below
    Image.new("RGB", (300, 300)).save(folder / "big_bomb.png")  # 4.5x: Pillow refuses it
    bad = {
        write_truncated_pdf(folder / "truncated.pdf").name: "truncated",
        write_encrypted_pdf(folder / "locked.pdf").name: "password",
        "empty.pdf": "empty file",
        "readme.pdf": "not a PDF",
        "bomb.png": "decompression-bomb",
        "big_bomb.png": "decompression-bomb",
        _truncated_png(folder / "cut.png").name: "truncated or corrupted",
        write_damaged_page_pdf(folder / "sub" / "damaged.pdf").name: "page 2 of 3",
    }
    (folder / ".hidden.pdf").write_bytes(b"skipped: hidden")
    (folder / "notes.txt").write_text("skipped: not a supported type")
    return good, bad


@pytest.fixture(scope="module")
def inbox(tmp_path_factory, colpali_encoder, reader) -> Inbox:
    """A folder of 7 good files (10 pages) and 8 bad ones, ingested by batches of 4."""
    folder = tmp_path_factory.mktemp("inbox")
    good, bad = _write_inbox(folder)
    store = LanceDBPageStore(uri=str(tmp_path_factory.mktemp("inbox_store") / "index"))
    with pytest.MonkeyPatch.context() as patch:
        # A 100 x 100 pixel PDF page and every good image are under the limit.
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
        report = ingest(folder, colpali_encoder, store, reader=reader, batch_size=4)
    return Inbox(folder, good, bad, report, store)


def test_a_folder_with_bad_inputs_reports_exactly_them(inbox, failures):
    report, bad = inbox.report, inbox.bad
    assert report.files == len(inbox.good) + len(bad)
    assert set(failures(report)) == set(bad)
    for name, reason in failures(report).items():
        assert bad[name] in reason, (name, reason)
    paths = {Path(failed.path).name: failed.path for failed in report.failed}
    assert paths["damaged.pdf"] == str(inbox.folder / "sub" / "damaged.pdf")


def test_every_good_page_of_a_folder_with_bad_inputs_is_stored(inbox, check_whole_pages):
    expected, report, store = inbox.expected_page_ids(), inbox.report, inbox.store
    assert len(expected) == 10
    assert check_whole_pages(store) == expected
    assert report.pages_added == 10
    assert (report.pages_unchanged, report.pages_replaced, report.pages_removed) == (0, 0, 0)
    assert store.doc_ids() == sorted(doc_id_for_file(path) for path in inbox.good)


@pytest.mark.parametrize(
    ("name", "colour"),
    [
        ("cmyk.tiff", (255, 0, 0)),
        ("clear.png", (255, 255, 255)),
        ("palette.png", (0, 0, 255)),
        ("wide.png", (156, 156, 156)),
    ],
)
def test_odd_image_modes_are_stored_as_the_colours_they_show(inbox, name, colour):
    # CMYK red, transparency on white, a palette's colour, 16-bit grey.
    (node,) = [n for n in inbox.store.get_nodes() if n.metadata["file_name"] == name]
    shown = decode_image(node.image).getpixel((5, 15))
    assert all(abs(a - b) <= 8 for a, b in zip(shown, colour, strict=True)), name


def test_no_committed_version_ever_held_a_page_of_a_bad_file(inbox, versions_page_ids):
    expected = inbox.expected_page_ids()
    assert all(ids <= expected for ids in versions_page_ids(inbox.store))


def test_the_summary_of_a_folder_with_bad_inputs_counts_them(inbox):
    assert inbox.report.summary().startswith("10 pages added, 0 unchanged, 8 files failed from 15")
    assert not inbox.report.ok


# ------------------------------------------------------------------------- re-runs


def _small_folder(folder: Path) -> dict[Path, int]:
    files = {write_numbered_pdf(folder / "a.pdf", 3): 3, write_numbered_pdf(folder / "b.pdf", 2): 2}
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "c.png")
    files[folder / "c.png"] = 1
    return files


def test_rerun_writes_nothing_and_encodes_nothing(
    tmp_path, colpali_encoder, reader, store, embed_calls
):
    files = _small_folder(tmp_path / "docs")

    first = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=4)
    assert first.pages_added == 6 and first.ok
    assert embed_calls == [4, 2]
    version, hashes = store.version, store.page_hashes()
    assert set(hashes) == set().union(*(page_ids_of(p, n) for p, n in files.items()))

    embed_calls.clear()
    for batch_size in (4, 5):  # batches cut elsewhere find the same pages
        again = ingest(
            tmp_path / "docs",
            colpali_encoder,
            store,
            reader=PDFPageReader(dpi=reader.dpi),
            batch_size=batch_size,
        )
        assert embed_calls == []
        assert store.version == version
        assert again.pages_unchanged == 6
        assert (again.pages_added, again.pages_replaced, again.pages_removed) == (0, 0, 0)
        assert again.ok and again.files == 3
    assert store.page_hashes() == hashes
    assert again.summary().startswith("0 pages added, 6 unchanged from 3 files")


def test_changed_file_replaces_its_pages_and_drops_the_pages_it_lost(
    tmp_path, colpali_encoder, reader, store, embed_calls, check_whole_pages
):
    a = write_numbered_pdf(tmp_path / "docs" / "a.pdf", 3, "first version")
    b = write_numbered_pdf(tmp_path / "docs" / "b.pdf", 2)
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=4)
    old_a = doc_id_for_file(a)

    write_numbered_pdf(a, 2, "second version")  # same path, new content, one page fewer
    embed_calls.clear()
    report = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=4)

    assert check_whole_pages(store) == page_ids_of(a, 2) | page_ids_of(b, 2)
    assert report.pages_added == 2 and report.pages_removed == 3
    assert report.pages_unchanged == 2 and report.pages_replaced == 0
    assert sum(embed_calls) == 2  # only the new version's pages were encoded
    assert old_a not in store.doc_ids()
    (new_a,) = {
        node.ref_doc_id for node in store.get_nodes() if node.metadata["file_name"] == "a.pdf"
    }
    assert new_a == doc_id_for_file(a) != old_a
    assert {n.metadata["page_count"] for n in store.get_nodes() if n.ref_doc_id == new_a} == {2}


def test_document_with_a_fixed_doc_id_losing_a_page_keeps_no_stale_page(
    tmp_path, colpali_encoder, reader, store, check_whole_pages
):
    path = write_numbered_pdf(tmp_path / "manual.pdf", 3, "edition 1")
    ingest_documents(reader.load_data(path, doc_id="manual"), colpali_encoder, store)
    assert store.page_ids() == ["manual-p1", "manual-p2", "manual-p3"]

    write_numbered_pdf(path, 2, "edition 2")
    report = ingest_documents(
        reader.load_data(path, doc_id="manual"), colpali_encoder, store, show_progress=False
    )

    assert check_whole_pages(store) == {"manual-p1", "manual-p2"}
    assert (report.pages_replaced, report.pages_removed, report.pages_added) == (2, 1, 0)
    assert {node.metadata["page_count"] for node in store.get_nodes()} == {2}


# ------------------------------------------------------------------------- a file failing mid-way


def _abc_with_b_failing_at_page_4(folder: Path, fail_render_call) -> tuple[Path, Path, Path]:
    """a.pdf (3 pages), b.pdf (5) and c.pdf (2), b.pdf's page 4 failing to render."""
    a = write_numbered_pdf(folder / "a.pdf", 3)
    b = write_numbered_pdf(folder / "b.pdf", 5)
    c = write_numbered_pdf(folder / "c.pdf", 2)
    # Render calls: a.pdf 1-3, b.pdf 4-8. Its page 4 fails after batches [a3 b1] and [b2 b3]
    # were committed: they must be taken back.
    fail_render_call(7)
    return a, b, c


def test_pdf_failing_mid_file_keeps_none_of_its_pages(
    tmp_path, fail_render_call, colpali_encoder, reader, store, check_whole_pages, versions_page_ids
):
    a, b, c = _abc_with_b_failing_at_page_4(tmp_path / "docs", fail_render_call)

    report = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    assert report.failed == [FailedFile(str(b), report.failed[0].reason)]
    assert "page 4 of 5 could not be rendered" in report.failed[0].reason
    assert check_whole_pages(store) == page_ids_of(a, 3) | page_ids_of(c, 2)
    assert report.pages_added == 5 and report.pages_removed == 0
    # b.pdf's first pages really were committed, then deleted.
    assert page_ids_of(b, 3) <= set().union(*versions_page_ids(store))
    assert doc_id_for_file(b) not in store.doc_ids()


def test_a_rerun_after_a_pdf_failed_mid_file_indexes_it(
    tmp_path, monkeypatch, fail_render_call, colpali_encoder, reader, store, check_whole_pages
):
    a, b, c = _abc_with_b_failing_at_page_4(tmp_path / "docs", fail_render_call)
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    monkeypatch.undo()
    rerun = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    assert rerun.ok and rerun.pages_added == 5 and rerun.pages_unchanged == 5
    assert check_whole_pages(store) == page_ids_of(a, 3) | page_ids_of(b, 5) | page_ids_of(c, 2)


# ------------------------------------------------------------------------- ingest_documents


def test_ingest_documents_stores_the_same_pages_as_ingest(tmp_path, colpali_encoder, reader):
    _small_folder(tmp_path / "docs")
    from_paths = LanceDBPageStore(uri=str(tmp_path / "from_paths"))
    from_documents = LanceDBPageStore(uri=str(tmp_path / "from_documents"))

    by_path = ingest(tmp_path / "docs", colpali_encoder, from_paths, reader=reader, batch_size=4)
    documents = reader.load_data(tmp_path / "docs")
    by_document = ingest_documents(documents, colpali_encoder, from_documents, batch_size=4)

    assert by_document.pages_added == by_path.pages_added == 6
    assert by_document.files == by_path.files == 3
    hashes = from_paths.page_hashes()
    assert from_documents.page_hashes() == hashes  # image, text and metadata
    ids = sorted(hashes)
    for left, right in zip(
        from_paths.get_page_vectors(ids), from_documents.get_page_vectors(ids), strict=True
    ):
        np.testing.assert_allclose(left.astype(np.float32), right.astype(np.float32), atol=2e-3)
    assert [n.metadata for n in from_paths.get_nodes(ids)] == [
        n.metadata for n in from_documents.get_nodes(ids)
    ]


def test_ingest_documents_finds_the_pages_ingest_stored_unchanged(
    tmp_path, colpali_encoder, reader, store
):
    _small_folder(tmp_path / "docs")
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=4)
    documents = reader.load_data(tmp_path / "docs")

    again = ingest_documents(documents, colpali_encoder, store, show_progress=False)

    assert again.pages_unchanged == 6 and again.pages_added == 0


def test_an_undecodable_document_fails_only_its_own_file(
    tmp_path, colpali_encoder, reader, store, check_whole_pages, failures
):
    a = write_numbered_pdf(tmp_path / "a.pdf", 2)
    b = write_numbered_pdf(tmp_path / "b.pdf", 2)
    documents = reader.load_data([a, b])
    broken = documents[2]  # b.pdf page 1, in the same batch as a.pdf's pages
    documents[2] = ImageDocument(
        id_=broken.id_,
        image=base64.b64encode(b"\x89PNG\r\n\x1a\n but not an image").decode(),
        image_mimetype="image/png",
        metadata=broken.metadata,
    )

    report = ingest_documents(documents, colpali_encoder, store, batch_size=4)

    assert failures(report) == {"b.pdf": failures(report)["b.pdf"]}
    assert failures(report)["b.pdf"].startswith("page 1: image cannot be decoded")
    assert check_whole_pages(store) == page_ids_of(a, 2)
    assert report.pages_added == 2


# ------------------------------------------------------------------------- progress bar


def test_progress_bar_counts_pages(tmp_path, capsys, colpali_encoder, reader, store):
    _small_folder(tmp_path / "docs")

    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=4)

    shown = capsys.readouterr().err
    assert "Indexing" in shown
    assert re.search(r"\b4/6\b", shown) and re.search(r"\b6/6\b", shown)
    assert re.search(r"page/s|s/page", shown)
    assert "added=6" in shown


def test_progress_bar_can_be_silenced(tmp_path, capsys, colpali_encoder, reader):
    _small_folder(tmp_path / "docs")

    ingest(
        tmp_path / "docs",
        colpali_encoder,
        LanceDBPageStore(uri=str(tmp_path / "two")),
        reader=reader,
        batch_size=4,
        show_progress=False,
    )
    ingest_documents(
        reader.load_data(tmp_path / "docs"),
        colpali_encoder,
        LanceDBPageStore(uri=str(tmp_path / "three")),
        show_progress=False,
    )
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- nothing to do, or refused


def test_folder_without_supported_files_is_an_empty_input(tmp_path, colpali_encoder, store):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "notes.txt").write_text("not a page")
    write_numbered_pdf(tmp_path / "docs" / ".hidden.pdf", 1)

    with pytest.raises(EmptyInputError, match="no PDF or image files"):
        ingest(tmp_path / "docs", colpali_encoder, store)
    assert store.schema is None and store.version == 0


def test_another_encoder_is_refused_before_anything_is_written(
    tmp_path, colpali_encoder, colqwen2_encoder, reader, store, monkeypatch
):
    write_numbered_pdf(tmp_path / "docs" / "a.pdf", 2)
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, show_progress=False)
    version, hashes = store.version, store.page_hashes()
    write_numbered_pdf(tmp_path / "docs" / "b.pdf", 2)
    called: list[int] = []
    monkeypatch.setattr(colqwen2_encoder, "embed_images", lambda images, **_: called.append(1))

    with pytest.raises(ModelMismatchError, match="holds vectors from encoder"):
        ingest(tmp_path / "docs", colqwen2_encoder, store, reader=reader)
    with pytest.raises(ModelMismatchError):
        ingest_documents(reader.load_data(tmp_path / "docs"), colqwen2_encoder, store)

    assert called == []
    assert store.version == version and store.page_hashes() == hashes


def test_report_counts_written_pages_and_failures():
    report = IngestReport(pages_added=4, pages_replaced=1, failed=[FailedFile("/x/a.pdf", "")])
    assert report.pages_written == 5 and not report.ok
    assert IngestReport().ok


def test_report_summary_names_every_count():
    report = IngestReport(
        files=3,
        pages_added=4,
        pages_replaced=1,
        pages_unchanged=2,
        pages_removed=3,
        failed=[FailedFile("/x/a.pdf", "empty file (0 bytes)")],
        seconds=1.25,
    )
    assert report.summary() == (
        "4 pages added, 1 replaced, 2 unchanged, 3 removed, 1 file failed from 3 files in 1.2 s"
    )


def test_report_summary_leaves_out_counts_of_zero():
    assert IngestReport(files=2, pages_unchanged=2).summary() == (
        "0 pages added, 2 unchanged from 2 files in 0.0 s"
    )


def test_report_summary_says_file_for_one_file():
    assert IngestReport(files=1, pages_unchanged=1).summary() == (
        "0 pages added, 1 unchanged from 1 file in 0.0 s"
    )


# ---------------------------------------------------------------- token pooling at ingest


def test_pool_factor_stores_pooled_page_vectors(tmp_path, store, reader, colpali_encoder):
    pdf = write_numbered_pdf(tmp_path / "docs" / "report.pdf", 2)
    report = ingest(pdf, colpali_encoder, store, reader=reader, pool_factor=3, show_progress=False)
    assert report.ok and report.pages_added == 2
    assert store.pool_factor == 3 and store.fingerprint["pool_factor"] == 3
    page_ids = sorted(page_ids_of(pdf, 2))
    pages = [decode_image(node_image(document)[0]) for document in reader.read_file(pdf)]
    full = colpali_encoder.embed_images(pages, show_progress=False)
    for page_id, full_vectors, stored in zip(
        page_ids, full, store.get_page_vectors(page_ids, dtype=np.float32), strict=True
    ):
        assert stored.shape == (-(-full_vectors.shape[0] // 3), full_vectors.shape[1])
        np.testing.assert_allclose(
            stored, hierarchical_pool(full_vectors, 3), atol=2e-3, err_msg=page_id
        )
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=2e-3)


def _ingest_pooled_by_2(tmp_path, store, reader, colpali_encoder) -> tuple[Path, Path]:
    """first.pdf ingested with pool factor 2; second.pdf written, not ingested."""
    first = write_numbered_pdf(tmp_path / "docs" / "first.pdf", 1)
    second = write_numbered_pdf(tmp_path / "docs" / "second.pdf", 1)
    ingest(
        first, colpali_encoder, store, reader=reader, pool_factor=np.int64(2), show_progress=False
    )
    return first, second


def test_later_ingests_keep_the_stores_pool_factor(tmp_path, store, reader, colpali_encoder):
    first, second = _ingest_pooled_by_2(tmp_path, store, reader, colpali_encoder)
    (n_pooled,) = {len(v) for v in store.get_page_vectors(sorted(page_ids_of(first, 1)))}
    ingest(second, colpali_encoder, store, reader=reader, show_progress=False)  # no pool_factor
    assert [len(v) for v in store.get_page_vectors(sorted(page_ids_of(second, 1)))] == [n_pooled]
    assert store.count() == 2


@pytest.mark.parametrize("other", [1, 3])
def test_a_pooled_store_refuses_another_pool_factor(
    tmp_path, store, reader, colpali_encoder, other
):
    _, second = _ingest_pooled_by_2(tmp_path, store, reader, colpali_encoder)
    with pytest.raises(ModelMismatchError, match="pool_factor=2"):
        ingest(second, colpali_encoder, store, reader=reader, pool_factor=other)
    assert store.count() == 1


def test_an_unpooled_store_refuses_pooled_pages(tmp_path, store, reader, colpali_encoder):
    pdf = write_numbered_pdf(tmp_path / "docs" / "report.pdf", 1)
    ingest(pdf, colpali_encoder, store, reader=reader, show_progress=False)
    assert store.pool_factor == 1
    version = store.version
    with pytest.raises(ModelMismatchError, match="pool_factor=1"):
        ingest_documents(
            list(reader.read_file(pdf)), colpali_encoder, store, pool_factor=2, show_progress=False
        )
    assert store.version == version  # nothing written


@pytest.mark.parametrize("bad", [0, 0.5, -3, float("nan"), float("inf"), True, "3"])
def test_pool_factor_must_be_a_number_of_at_least_one(
    tmp_path, store, reader, colpali_encoder, bad
):
    pdf = write_numbered_pdf(tmp_path / "docs" / "report.pdf", 1)
    with pytest.raises(InvalidRequestError, match="pool_factor must be a number >= 1"):
        ingest(pdf, colpali_encoder, store, reader=reader, pool_factor=bad)
    assert store.count() == 0
