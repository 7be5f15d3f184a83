"""Several pages as one grid image (vlm/tiling.py)."""

from __future__ import annotations

from chats import PAGE_SIZES
from PIL import Image

from llama_index_vlm.vlm.tiling import tile_pages

PAGES = [Image.new("RGB", size, "red") for size in PAGE_SIZES[:3]]


def test_the_grid_has_cells_of_the_largest_page_and_gutters():
    assert tile_pages(PAGES).size == (2 * 120 + 8, 2 * 100 + 8)  # 2 x 2 cells, an 8 px gutter


def test_the_first_page_sits_at_the_top_left():
    assert tile_pages(PAGES).getpixel((0, 0)) == (255, 0, 0)


def test_a_smaller_page_sits_on_white_paper():
    assert tile_pages(PAGES).getpixel((120 + 8 + 119, 99)) == (255, 255, 255)  # page 2: 40 px


def test_one_page_is_its_own_grid():
    assert tile_pages(PAGES[:1]) is PAGES[0]
