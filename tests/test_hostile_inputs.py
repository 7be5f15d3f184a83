"""Hostile and broken input (issue 7): bad files, file-system traps, every Pillow mode, hostile
queries and filter values. Each gets a clear error from ``llama_index_vlm.errors`` (or is
handled), within a stated time, and leaves the store as it was (same version, same pages).

Time bounds: every test has a pytest-timeout; each case is also timed and must finish within
``HANG_GUARD_SECONDS``, a guard against hangs, not a performance threshold.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hostile import BAD_FILES, HOSTILE_QUERIES, HOSTILE_STRINGS, empty_pages, encoded, png_header
from llama_index.core.schema import QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from pdfs import write_numbered_pdf, write_text_pdf
from PIL import Image

from llama_index_vlm.errors import (
    EmptyInputError,
    UnreadableDocumentError,
    UnsupportedFilterError,
    VLMError,
)
from llama_index_vlm.images import decode_image, to_rgb
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.pages import doc_id_for_file
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore

pytestmark = [
    pytest.mark.timeout(120),
    # Pillow's own warning while it tries the garbage TIFF, which is then refused.
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]

HANG_GUARD_SECONDS = 30.0
DPI = 36  # 200 x 200 pt pages -> 100 x 100 pixels; the tiny model sees 32 x 32 anyway
REFUSED = {case: spec for case, spec in BAD_FILES.items() if spec[2] is not None}
HANDLED = {case: spec for case, spec in BAD_FILES.items() if spec[2] is None}
# Not regular files: a folder walk passes over them (they are refused when named explicitly).
NOT_REGULAR_FILES = {
    "named pipe .pdf",
    "/dev/zero as .pdf",
    "/dev/urandom as .png",
    "symlink to itself",
    "dangling symlink",
}


class Timer:
    """``with Timer() as timer:`` ... ``timer.seconds``; asserts the hang guard on exit."""

    def __enter__(self) -> Timer:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.monotonic() - self.started
        assert self.seconds < HANG_GUARD_SECONDS, f"took {self.seconds:.1f} s: a hang?"


def state(store: LanceDBPageStore) -> tuple[int, list[str]]:
    """What must not change: the table version and the stored page ids."""
    return store.version, sorted(store.page_ids())


@pytest.fixture(scope="module")
def reader() -> PDFPageReader:
    return PDFPageReader(dpi=DPI)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, colpali_encoder, reader):
    """A store holding two good PDFs (4 pages), shared by the tests that must not change it."""
    folder = tmp_path_factory.mktemp("corpus")
    for name in ("alpha", "beta"):
        write_numbered_pdf(folder / "good" / f"{name}.pdf", 2)
    store = LanceDBPageStore(uri=str(folder / "index"))
    report = ingest(folder / "good", colpali_encoder, store, reader=reader, show_progress=False)
    assert report.ok and report.pages_added == 4
    return store


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    return LanceDBPageStore(uri=str(tmp_path / "index"))


# -------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_file_is_refused_clearly_and_changes_nothing(
    tmp_path, corpus, colpali_encoder, reader, case
):
    name, make, reason = REFUSED[case]
    path = tmp_path / name
    make(path)
    before = state(corpus)

    with Timer():
        with pytest.raises(UnreadableDocumentError) as raised:
            list(reader.read_file(path))
        report = ingest(path, colpali_encoder, corpus, reader=reader, show_progress=False)

    assert reason in raised.value.reason
    assert raised.value.path == str(path) and name in str(raised.value)
    assert [(failed.path, failed.reason) for failed in report.failed] == [
        (str(path), raised.value.reason)
    ]
    assert report.pages_written == 0
    assert state(corpus) == before


@pytest.mark.slow
def test_a_folder_of_every_bad_file_indexes_exactly_the_readable_ones(
    tmp_path, store, colpali_encoder, reader, check_whole_pages
):
    folder = tmp_path / "shared"
    folder.mkdir()
    for name, make, _ in BAD_FILES.values():
        make(folder / name)
    good = write_numbered_pdf(folder / "good.pdf", 2)

    with Timer():
        report = ingest(folder, colpali_encoder, store, reader=reader, show_progress=False)

    refused = {name for case, (name, _, _) in REFUSED.items() if case not in NOT_REGULAR_FILES}
    assert {Path(failed.path).name for failed in report.failed} == refused
    for failed in report.failed:
        name = Path(failed.path).name
        expected = next(reason for n, _, reason in REFUSED.values() if n == name)
        assert expected in failed.reason, (name, failed.reason)
    readable = {name for name, _, _ in HANDLED.values()} | {good.name}
    stored = check_whole_pages(store)
    assert {node.metadata["file_name"] for node in store.get_nodes()} == readable
    # nearly.pdf keeps its 6 pages; every other readable file is one page, good.pdf two.
    assert len(stored) == report.pages_added == 6 + (len(HANDLED) - 1) + 2
    assert report.files == len(BAD_FILES) - len(NOT_REGULAR_FILES) + 1

    again = ingest(folder, colpali_encoder, store, reader=reader, show_progress=False)
    assert (again.pages_added, again.pages_unchanged) == (0, len(stored))


@pytest.mark.slow
def test_thousands_of_empty_pages_are_read_in_bounded_time(
    tmp_path, store, colpali_encoder, check_whole_pages
):
    path = tmp_path / "empty3000.pdf"
    path.write_bytes(empty_pages(3000))

    with Timer() as counting:
        assert PDFPageReader(dpi=DPI).count_pages(path) == 3000
    with Timer() as first_page:
        pages = PDFPageReader(dpi=DPI).read_file(path)
        first = next(pages)
        pages.close()
    with Timer() as all_pages:
        # Tiny pages: this measures the per-page cost of the page tree, not rendering.
        numbers = [doc.metadata["page_number"] for doc in PDFPageReader(dpi=2).read_file(path)]
    # The last pages, indexed on their own with a page range: the length costs nothing extra.
    with Timer() as tail:
        report = ingest(
            path,
            colpali_encoder,
            store,
            reader=PDFPageReader(dpi=DPI, first_page=2991),
            show_progress=False,
        )

    assert first.metadata["page_number"] == 1 and first.metadata["page_count"] == 3000
    assert numbers == list(range(1, 3001))
    doc_id = doc_id_for_file(path)
    assert check_whole_pages(store) == {f"{doc_id}-p{n}" for n in range(2991, 3001)}
    assert report.ok and report.pages_added == 10
    print(
        f"3000 empty pages: count {counting.seconds:.2f} s, first page {first_page.seconds:.2f} s,"
        f" all 3000 at 2 dpi {all_pages.seconds:.2f} s, last 10 indexed {tail.seconds:.2f} s"
    )


@pytest.mark.slow
def test_a_14400_pt_page_is_rendered_at_the_dpi_that_fits_the_pixel_budget(
    tmp_path, store, colpali_encoder, check_whole_pages
):
    path = tmp_path / "poster.pdf"
    write_text_pdf(path, ["poster"], width_pt=14400, height_pt=14400)  # PDF's largest page

    with Timer():
        report = ingest(path, colpali_encoder, store, reader=PDFPageReader(), show_progress=False)

    assert report.ok and report.pages_added == 1
    (page_id,) = check_whole_pages(store)
    (node,) = store.get_nodes([page_id])
    # 144 dpi would be 28800 x 28800 pixels; 47 dpi is the highest under Pillow's 89.5 MP.
    assert node.metadata["dpi"] == 47
    assert node.metadata["width"] == node.metadata["height"] == 9400


def test_pages_of_extreme_aspect_ratio_are_embedded_by_every_family(
    tmp_path, colpali_encoder, colqwen2_encoder
):
    """Regression: Qwen2-VL's processor raised ValueError for a page over 200:1, which failed
    every file sharing the page's batch.
    """
    slivers = [Image.new("L", size, 0) for size in [(1, 5000), (5000, 1), (3, 700), (1, 1)]]
    folder = tmp_path / "slivers"
    folder.mkdir()
    for n, image in enumerate(slivers):
        image.save(folder / f"sliver{n}.png")
    write_numbered_pdf(folder / "normal.pdf", 1)
    for encoder in (colpali_encoder, colqwen2_encoder):
        vectors = encoder.embed_images(slivers)
        assert all(v.ndim == 2 and len(v) > 0 and np.isfinite(v).all() for v in vectors)
        target = LanceDBPageStore(uri=str(tmp_path / type(encoder.processor).__name__))
        report = ingest(
            folder,
            encoder,
            target,
            reader=PDFPageReader(dpi=DPI),
            batch_size=8,
            show_progress=False,
        )
        assert report.ok, report.failed
        assert target.count() == 5


# ------------------------------------------------------------------------ every Pillow mode


def _file_format(mode: str) -> tuple[str, str] | None:
    """A (format, suffix) that stores ``mode`` as it is, or None if no supported format does."""
    for image_format, suffix in [("PNG", ".png"), ("TIFF", ".tiff"), ("JPEG", ".jpg")]:
        try:
            data = encoded(Image.new(mode, (4, 4)), image_format)
        except (OSError, ValueError, KeyError):
            continue
        with Image.open(io.BytesIO(data)) as image:
            if image.mode == mode or (mode, image.mode) in {("I;16B", "I;16"), ("I;16L", "I;16")}:
                return image_format, suffix
    return None


def test_every_pillow_mode_is_embedded_and_indexed(
    tmp_path, store, colpali_encoder, colqwen2_encoder, reader, check_whole_pages
):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 255, (30, 40, 4), dtype=np.uint8))
    wide = Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16))  # 16-bit grey
    images = {
        mode: (wide if mode.startswith("I;16") else rgba).convert(mode) for mode in Image.MODES
    }
    assert [image.mode for image in images.values()] == list(Image.MODES)

    # In memory, every mode Pillow has (some no file format holds: HSV, La, RGBa, I;16N).
    for mode, image in images.items():
        rgb = to_rgb(image)
        assert (rgb.mode, rgb.size) == ("RGB", (40, 30)), mode
    for encoder in (colpali_encoder, colqwen2_encoder):
        vectors = encoder.embed_images(list(images.values()))
        assert all(np.isfinite(v).all() and len(v) > 0 for v in vectors)

    # As files, every mode some supported format stores as it is.
    folder = tmp_path / "modes"
    folder.mkdir()
    saved = []
    for mode, image in images.items():
        spec = _file_format(mode)
        if spec is not None:
            image.save(folder / f"mode_{mode.replace(';', '_')}{spec[1]}", spec[0])
            saved.append(mode)
    assert len(saved) >= 15, saved
    report = ingest(folder, colpali_encoder, store, reader=reader, show_progress=False)
    assert report.ok, report.failed
    assert len(check_whole_pages(store)) == len(saved)


# ------------------------------------------------------------------------ file-system traps


@pytest.mark.skipif(os.name != "posix", reason="bytes file names, FIFOs and links are POSIX")
def test_file_system_traps_in_a_folder(tmp_path, store, colpali_encoder, reader, check_whole_pages):
    folder = tmp_path / "shared"
    (folder / "sub").mkdir(parents=True)
    # A file name that is not UTF-8 (Latin-1 "café", and a stray byte).
    write_numbered_pdf(folder / "latin1.pdf", 2)
    os.rename(folder / "latin1.pdf", os.path.join(os.fsencode(folder), b"caf\xe9 \xff.pdf"))
    write_numbered_pdf(folder / "sub" / "inner.pdf", 1)
    write_numbered_pdf(folder / "folder.pdf" / "nested.pdf", 1)  # a directory named like a PDF
    write_numbered_pdf(folder / ".hidden.pdf", 1)
    os.symlink("..", folder / "sub" / "loop")  # a link back up: a cycle
    os.symlink(folder / "sub", folder / "sub_again")  # the same folder twice
    os.symlink("self.pdf", folder / "self.pdf")  # a link to itself
    os.symlink(folder / "missing.pdf", folder / "dangling.pdf")
    os.mkfifo(folder / "pipe.pdf")  # reading it would block forever
    os.symlink("/dev/zero", folder / "zeros.pdf")  # reading it would never end

    with Timer():
        report = ingest(folder, colpali_encoder, store, reader=reader, show_progress=False)

    assert report.ok, report.failed
    names = sorted(node.metadata["file_name"] for node in store.get_nodes())
    # The undecodable bytes are kept as \xNN escapes: valid text for Arrow, JSON and the VLM.
    assert names == ["caf\\xe9 \\xff.pdf"] * 2 + ["inner.pdf", "nested.pdf"]
    assert len(check_whole_pages(store)) == 4
    # The escaped path is stable: a second run recognises every page.
    again = ingest(folder, colpali_encoder, store, reader=reader, show_progress=False)
    assert (again.pages_unchanged, again.pages_written, again.pages_removed) == (4, 0, 0)

    # Named explicitly, the traps are refused at once, each with its reason.
    before = state(store)
    with Timer():
        explicit = ingest(
            [folder / "pipe.pdf", folder / "zeros.pdf", folder / "self.pdf"],
            colpali_encoder,
            store,
            reader=reader,
            show_progress=False,
        )
    assert [Path(f.path).name for f in explicit.failed] == ["pipe.pdf", "zeros.pdf", "self.pdf"]
    assert state(store) == before
    # A folder of nothing but traps holds no document: a clear error, at once.
    traps = tmp_path / "traps"
    traps.mkdir()
    os.mkfifo(traps / "pipe.pdf")
    os.symlink(".", traps / "loop")
    os.symlink("gone.pdf", traps / "dangling.pdf")
    with Timer(), pytest.raises(EmptyInputError, match="no PDF or image files"):
        ingest(traps, colpali_encoder, store, reader=reader, show_progress=False)
    assert state(store) == before


# ----------------------------------------------------------------------------------- queries


@pytest.mark.parametrize("case", list(HOSTILE_QUERIES))
def test_hostile_queries(corpus, colpali_encoder, case):
    query, error = HOSTILE_QUERIES[case]
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=corpus, similarity_top_k=3)
    before = state(corpus)

    with Timer():
        if error is not None:
            with pytest.raises(error) as raised:
                retriever.retrieve(query)
            assert isinstance(raised.value, VLMError) and isinstance(raised.value, ValueError)
        else:
            hits = retriever.retrieve(query)

    if error is None:
        assert len(hits) == 3
        assert all(np.isfinite(hit.score) for hit in hits)
        assert all(decode_image(hit.node.image).size == (100, 100) for hit in hits)
    assert state(corpus) == before


def test_a_query_at_the_model_limit_is_answered_and_one_over_it_refused(corpus, colpali_encoder):
    limit = colpali_encoder.max_query_tokens
    prompt = len(colpali_encoder.processor.process_queries(text=["a"])["input_ids"][0]) - 1
    fits, too_long = "a" * (limit - prompt), "a" * (limit - prompt + 1)
    assert colpali_encoder.embed_queries([fits])[0].shape[0] == limit
    with pytest.raises(VLMError, match=f"reads at most {limit}"):
        colpali_encoder.embed_queries([fits, too_long])


@pytest.mark.parametrize(
    "make_image",
    [
        pytest.param(lambda p: p.write_bytes(png_header(100_000, 100_000)), id="png bomb"),
        pytest.param(lambda p: p.write_bytes(b"%PDF-1.4 not an image"), id="not an image"),
        pytest.param(lambda p: p.mkdir(), id="a directory"),
        pytest.param(lambda p: None, id="missing"),
    ],
)
def test_hostile_image_queries(tmp_path, corpus, colpali_encoder, make_image):
    path = tmp_path / "query.png"
    make_image(path)
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=corpus)
    before = state(corpus)
    with Timer(), pytest.raises(UnreadableDocumentError, match="query.png"):
        retriever.retrieve(QueryBundle(query_str="", image_path=str(path)))
    assert state(corpus) == before


# ----------------------------------------------------------------------------- filter values


def _filtered(store, encoder, filters: MetadataFilters) -> set[str]:
    """The pages a retriever with ``filters`` returns, all it may return."""
    retriever = ColPaliRetriever(
        encoder=encoder, store=store, similarity_top_k=100, filters=filters
    )
    return {hit.node.node_id for hit in retriever.retrieve("revenue")}


def _one(key: str, value, operator: FilterOperator = FilterOperator.EQ) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])


@pytest.mark.parametrize("value", HOSTILE_STRINGS, ids=ascii)
def test_hostile_filter_values_match_nothing_and_delete_nothing(corpus, colpali_encoder, value):
    before = state(corpus)
    every_page = set(before[1])
    if "\udcff" in value:  # not valid Unicode: refused before reaching LanceDB
        with pytest.raises(UnsupportedFilterError, match="not valid Unicode"):
            _filtered(corpus, colpali_encoder, _one("file_name", value))
        with pytest.raises(UnsupportedFilterError):
            corpus.delete(value)
        assert state(corpus) == before
        return

    keys = ("file_name", "doc_id", "node_id", "tag")  # columns, an alias, a JSON key
    with Timer():
        for key in keys:
            assert corpus.page_ids(filters=_one(key, value)) == [], key
            assert corpus.page_ids(filters=_one(key, [value], FilterOperator.IN)) == [], key
            assert set(corpus.page_ids(filters=_one(key, value, FilterOperator.NE))) == every_page
        # End to end, through the retriever: any of them matching is still nothing.
        anything = MetadataFilters(
            filters=[MetadataFilter(key=key, value=value) for key in keys], condition="or"
        )
        assert _filtered(corpus, colpali_encoder, anything) == set()
        corpus.delete(value)
        corpus.delete_nodes(node_ids=[value])
        for key in ("tag", "file_name"):
            corpus.delete_nodes(filters=_one(key, value))
    assert state(corpus) == before


@pytest.mark.parametrize(
    "key",
    [
        "x') OR 1=1 --",
        "tag' OR '1'='1",
        '$["doc_id"]',
        'a"b',
        "a\\b",
        "",
        "\x00",
        "tag\x00",
        "metadata)) OR TRUE --",
        "\u202etag",
        "a\udcffb",
    ],
    ids=ascii,
)
def test_hostile_filter_keys_are_refused(corpus, colpali_encoder, key):
    before = state(corpus)
    with pytest.raises(UnsupportedFilterError, match="cannot be filtered"):
        _filtered(corpus, colpali_encoder, _one(key, "alpha.pdf"))
    with pytest.raises(UnsupportedFilterError):
        corpus.delete_nodes(filters=_one(key, "x"))
    assert state(corpus) == before
