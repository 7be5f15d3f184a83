"""Pixel bombs (issue 13): pages reduced to what the model reads before they are batched.

A PDF of a few hundred bytes can ask for pages of 200 x 200 inches; an image can be one pixel
wide and a million tall. Whatever the page sizes, a batch holds small images, so memory does
not grow with the pages: the peak is measured in a fresh process (tests/peak_memory.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bombs import huge_media_box_pdf, strip_png
from llama_index.core.schema import QueryBundle
from peak_memory import measure
from PIL import Image

from llama_index_vlm.encoder import _unpad
from llama_index_vlm.image_sizing import FALLBACK_MAX_PIXELS, MAX_ASPECT_RATIO
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore

# Pages at a pixel budget of 12 megapixels (36 MB each once decoded): a batch of four held
# four of them and the processor's float copies of each before pages were reduced as they are
# decoded (840 MB at 25 megapixels), about one page after.
_BUDGET = 12_000_000
_SETUP = """
from pathlib import Path
from PIL import Image
from llama_index.core.schema import QueryBundle
import bombs
from pdfs import write_numbered_pdf
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
Image.MAX_IMAGE_PIXELS = {budget}
root = Path({root!r})
(root / "docs").mkdir(parents=True)
(root / "docs" / "bomb.pdf").write_bytes(bombs.huge_media_box_pdf(4))
write_numbered_pdf(root / "docs" / "good.pdf", 2)
(root / "strip.png").write_bytes(bombs.strip_png(1, 1_000_000))
encoder = ColPaliEncoder.from_pretrained({checkpoint!r}, show_progress=False)
store = LanceDBPageStore(uri=str(root / "index"))
# Warm up: a first ingest's one-time costs (LanceDB's runtime and first commit, torch's
# kernels) are not the batch's, and they vary with the machine.
write_numbered_pdf(root / "warm-up.pdf", 2)
ingest(root / "warm-up.pdf", encoder, store, show_progress=False)
"""
_STEPS = {
    "ingest": """
report = ingest(root / "docs", encoder, store, batch_size=16, show_progress=False)
result = {"added": report.pages_added, "failed": len(report.failed), "pages": store.count()}
""",
    "strip query": """
retriever = ColPaliRetriever(encoder, store, similarity_top_k=1)
hits = retriever.retrieve(QueryBundle(query_str="", image_path=str(root / "strip.png")))
result = len(hits)
""",
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_checkpoint):
    """In a fresh process: ingesting 4 pages of 14,400 x 14,400 pt (rendered at the pixel
    budget) and a good PDF in one batch, then an image query with a 1 x 1,000,000 strip.
    """
    root = tmp_path_factory.mktemp("pixel_bombs")
    checkpoint = str(tiny_checkpoint("colqwen2"))
    return measure(_SETUP.format(budget=_BUDGET, root=str(root), checkpoint=checkpoint), _STEPS)


def test_huge_pages_and_the_good_file_beside_them_are_all_indexed(measured):
    assert measured["ingest"].result == {"added": 6, "failed": 0, "pages": 8}


def test_a_batch_of_huge_pages_holds_less_than_two_of_them_decoded(measured):
    one_page_mb = _BUDGET * 3 / 2**20  # 34 MiB of RGB
    assert measured["ingest"].growth_mb < 2 * one_page_mb + 48


def test_a_strip_of_a_million_pixels_as_an_image_query_costs_little_memory(measured):
    assert measured["strip query"].result == 1
    # Padded to 200:1 at full length, the strip was 5,000 x 1,000,000 pixels: 15 GB.
    assert measured["strip query"].growth_mb < 256


def test_prepared_pages_are_the_processors_input_size(colpali_encoder, colqwen2_encoder):
    page = Image.new("RGB", (9400, 9400), "white")
    assert colpali_encoder.prepare_image(page).size == (32, 32)  # the tiny ColPali's input
    width, height = colqwen2_encoder.prepare_image(page).size
    assert width * height <= colqwen2_encoder.processor.image_processor.size["longest_edge"]


@pytest.mark.parametrize("size", [(900, 1300), (1300, 200), (20, 40)])
@pytest.mark.parametrize("family", ["colpali", "colqwen2"])
def test_reducing_pages_first_leaves_their_embeddings_bit_identical(
    request, family, size, colpali_encoder, colqwen2_encoder
):
    encoder = colpali_encoder if family == "colpali" else colqwen2_encoder
    pixels = np.random.default_rng(7).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    page = Image.fromarray(pixels)
    inputs = encoder.processor.process_images(images=[page])  # the processor alone, full size
    with torch.inference_mode():
        (unreduced,) = _unpad(encoder.model(**inputs).embeddings, inputs["attention_mask"])
    (reduced,) = encoder.embed_images([page])
    assert np.array_equal(reduced, unreduced)


def test_a_one_pixel_wide_strip_is_shrunk_before_it_is_padded(colpali_encoder, colqwen2_encoder):
    strip = Image.new("L", (1, 1_000_000), 255)
    for encoder in (colpali_encoder, colqwen2_encoder):
        prepared = encoder.prepare_image(strip)
        assert prepared.width * prepared.height <= 1.01 * FALLBACK_MAX_PIXELS
        assert max(prepared.size) <= MAX_ASPECT_RATIO * min(prepared.size)


def test_a_strip_of_a_million_pixels_is_indexed(tmp_path, colqwen2_encoder):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "strip.png").write_bytes(strip_png(1, 1_000_000))
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    report = ingest(tmp_path / "docs", colqwen2_encoder, store, show_progress=False)
    assert (report.pages_added, report.failed) == (1, [])


def test_an_image_query_is_answered_from_a_huge_image(tmp_path, colpali_encoder):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bomb.pdf").write_bytes(huge_media_box_pdf(1, side_pt=3000))
    ingest(tmp_path / "docs", colpali_encoder, store, reader=PDFPageReader(dpi=72))
    Image.new("RGB", (6000, 6000), "white").save(tmp_path / "query.png")
    retriever = ColPaliRetriever(colpali_encoder, store, similarity_top_k=1)
    (hit,) = retriever.retrieve(QueryBundle(query_str="", image_path=str(tmp_path / "query.png")))
    assert hit.node.metadata["file_name"] == "bomb.pdf"
