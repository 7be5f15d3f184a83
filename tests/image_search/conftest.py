"""Fixtures of the image-search tests: tiny BLIP-2 and SigLIP encoders, a folder of photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def blip2_encoder(tiny_checkpoint):
    from llama_index_vlm.image_search.encoder import ImageTextEncoder

    return ImageTextEncoder.from_pretrained(tiny_checkpoint("blip2_itm"), show_progress=False)


@pytest.fixture(scope="session")
def siglip_encoder(tiny_checkpoint):
    from llama_index_vlm.image_search.encoder import ImageTextEncoder

    return ImageTextEncoder.from_pretrained(tiny_checkpoint("siglip"), show_progress=False)


def noise_image(seed: int, size: tuple[int, int] = (80, 60)) -> Image.Image:
    """A photo-like image of random pixels: every seed gives a different, fixed image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def photos(tmp_path):
    """A folder of six photos (one in a subfolder, one 900 pixels wide) and a broken file."""
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    for number in range(5):
        noise_image(number).save(folder / f"photo{number}.jpg")
    noise_image(5, size=(900, 300)).save(folder / "trip" / "wide.png")
    (folder / "trip" / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture
def make_photo():
    """``make_photo(seed, size=(80, 60))`` -> a fixed random-pixel photo (a PIL image)."""
    return noise_image
