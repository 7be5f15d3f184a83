"""``index --images-only``, ``search --image-search`` and ``ask --image-search``
(llama_index_vlm.cli.images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image

from llama_index_vlm.cli.images import DEFAULT_IMAGE_MODEL


@pytest.fixture(scope="module")
def photos(tmp_path_factory, tiny_checkpoint):
    """Four random photos indexed with the tiny BLIP-2 retrieval checkpoint."""
    root = tmp_path_factory.mktemp("cli_photos")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(4):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{number}.jpg")
    store = root / "index"
    run = run_cli(
        "index", folder, "--images-only", "--store", store,
        "--image-model", tiny_checkpoint("blip2_itm"), "--no-progress",
    )  # fmt: skip
    return {"folder": folder, "store": store, "run": run}


def test_index_images_only_stores_every_photo(photos):
    status, out, err = photos["run"]
    assert status == 0, err
    assert out.splitlines()[0].startswith("4 image(s) indexed") and "4 images" in out


def test_image_search_by_text_lists_the_photos_best_first(photos):
    status, out, err = run_cli("search", "a photo", "--image-search", "--store", photos["store"])
    assert status == 0, err
    lines = out.splitlines()
    scores = [float(line.rsplit("score ", 1)[1]) for line in lines]
    assert len(lines) == 4 and scores == sorted(scores, reverse=True)


def test_image_search_by_example_finds_the_photo_itself(photos):
    example = photos["folder"] / "photo2.jpg"
    status, out, err = run_cli(
        "search", "--image-search", "--image", example, "--store", photos["store"], "--json"
    )
    assert status == 0, err
    assert json.loads(out)[0]["file_name"] == "photo2.jpg"


def test_ask_about_photos_answers_and_lists_them(photos, tiny_checkpoint):
    status, out, err = run_cli(
        "ask", "what is in this photo?", "--image-search", "--store", photos["store"],
        "--vlm", tiny_checkpoint("llava"), "-k", 1, "--max-new-tokens", 4,
    )  # fmt: skip
    assert status == 0, err
    assert out.splitlines()[-2] == "Photos:" and "photo" in out.splitlines()[-1]


def test_image_search_without_photos_is_a_usage_error(indexed):
    status, _, err = run_cli("search", "a photo", "--image-search", "--store", indexed["store"])
    assert status == 2 and "holds no photos" in err


def test_the_default_image_model_is_the_librarys():
    from llama_index_vlm.image_search.encoder import DEFAULT_IMAGE_TEXT_ENCODER

    assert DEFAULT_IMAGE_MODEL == DEFAULT_IMAGE_TEXT_ENCODER
