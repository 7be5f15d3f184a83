"""Faults during ingestion (issue 7): an encoder raising mid-batch, and a run interrupted before
a file fails. An ingest killed with SIGKILL is in tests/stress/test_kill_ingest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pdfs import page_ids_of, write_numbered_pdf

from llama_index_vlm.ingestion import ingest
from llama_index_vlm.pages import doc_id_for_file


def _abc(folder: Path, counts=(3, 3, 3)) -> list[Path]:
    return [
        write_numbered_pdf(folder / f"{name}.pdf", n) for name, n in zip("abc", counts, strict=True)
    ]


def _raise_on_call(
    monkeypatch, encoder, failing_call: int | set[int], error: BaseException
) -> list[int]:
    """Make ``encoder.embed_images`` raise ``error`` on its ``failing_call``-th call (or on
    each of a set of calls).
    """
    calls: list[int] = []
    real = encoder.embed_images
    failing = {failing_call} if isinstance(failing_call, int) else failing_call

    def flaky(images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) in failing:
            raise error
        return real(images, *args, **kwargs)

    monkeypatch.setattr(encoder, "embed_images", flaky)
    return calls


# --------------------------------------------------------------------- a model raising mid-batch


@dataclass(frozen=True)
class EncoderFailure:
    """Which ``embed_images`` call raises, and what it costs: the files that fail, the pages
    of the failed batch, and the image counts of every call made.
    """

    failing_call: int | set[int]
    failed_files: set[str]
    failed_batch: list[tuple[str, int]]
    calls: list[int]


# Batches of 2 over a.pdf, b.pdf, c.pdf (3 pages each): [a1 a2] [a3 b1] [b2 b3] [c1 c2] [c3].
# A failed batch of two files is tried again file by file: [a3] fails again, [b1] is stored.
# The failed files' later pages are neither encoded nor stored: c.pdf's batches follow.
@pytest.fixture(
    params=[
        EncoderFailure({2, 3}, {"a.pdf"}, [("a", 3)], [2, 2, 1, 1, 2, 2, 1]),
        EncoderFailure(3, {"b.pdf"}, [("b", 2), ("b", 3)], [2, 2, 2, 2, 1]),
    ],
    ids=["a-batch-spanning-two-files", "the-rest-of-a-file-half-stored"],
)
def encoder_failure(request) -> EncoderFailure:
    return request.param


OUT_OF_MEMORY = RuntimeError("CUDA out of memory (simulated)")


def test_encoder_raising_mid_batch_writes_nothing_of_it_and_reports_its_files(
    tmp_path,
    monkeypatch,
    colpali_encoder,
    reader,
    store,
    check_whole_pages,
    encoder_failure,
    failures,
    versions_page_ids,
):
    failure = encoder_failure
    files = dict(zip("abc", _abc(tmp_path / "docs"), strict=True))
    calls = _raise_on_call(monkeypatch, colpali_encoder, failure.failing_call, OUT_OF_MEMORY)

    report = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    assert set(failures(report)) == failure.failed_files
    for reason in failures(report).values():
        assert reason == "embedding or storing failed: RuntimeError: CUDA out of memory (simulated)"
    assert calls == failure.calls
    indexed = {n: path for n, path in files.items() if f"{n}.pdf" not in failure.failed_files}
    expected = set().union(*(page_ids_of(path, 3) for path in indexed.values()))
    assert check_whole_pages(store) == expected
    assert report.pages_added == len(expected)
    # The failed batch never reached any committed version.
    batch_ids = {f"{doc_id_for_file(files[name])}-p{n}" for name, n in failure.failed_batch}
    assert all(not (ids & batch_ids) for ids in versions_page_ids(store))


def test_a_rerun_after_the_encoder_raised_indexes_the_rest(
    tmp_path, monkeypatch, colpali_encoder, reader, store, check_whole_pages, encoder_failure
):
    files = _abc(tmp_path / "docs")
    _raise_on_call(monkeypatch, colpali_encoder, encoder_failure.failing_call, OUT_OF_MEMORY)
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)
    indexed = 9 - 3 * len(encoder_failure.failed_files)

    monkeypatch.undo()
    rerun = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    assert rerun.ok
    assert (rerun.pages_added, rerun.pages_unchanged) == (9 - indexed, indexed)
    assert check_whole_pages(store) == set().union(*(page_ids_of(p, 3) for p in files))


def test_a_file_half_indexed_by_an_interrupted_run_is_removed_when_it_fails(
    tmp_path,
    monkeypatch,
    fail_render_call,
    colpali_encoder,
    reader,
    store,
    check_whole_pages,
    failures,
):
    a, b, c = _abc(tmp_path / "docs", counts=(3, 5, 2))
    # Run 1 stops (Ctrl-C) while embedding [b2 b3]: a.pdf and b.pdf's page 1 are stored.
    _raise_on_call(monkeypatch, colpali_encoder, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)
    assert check_whole_pages(store) == page_ids_of(a, 3) | page_ids_of(b, 1)
    monkeypatch.undo()

    # Run 2: b.pdf's page 4 cannot be rendered (render calls: a.pdf 1-3, b.pdf 4-7).
    fail_render_call(7)
    report = ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, batch_size=2)

    assert set(failures(report)) == {"b.pdf"}
    assert "page 4 of 5 could not be rendered" in failures(report)["b.pdf"]
    # Whole file or nothing: b.pdf's page 1, stored by run 1, went too.
    assert check_whole_pages(store) == page_ids_of(a, 3) | page_ids_of(c, 2)
    assert (report.pages_added, report.pages_unchanged, report.pages_removed) == (2, 3, 1)
