"""Tiling several page images into one grid image, for models that see one image per prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

# A grey gutter between pages, so the model sees where one page ends and the next begins.
_GUTTER = 8
_GUTTER_COLOUR = (128, 128, 128)
_PAPER = (255, 255, 255)


def tile_pages(pages: Sequence[Image.Image]) -> Image.Image:
    """Tile pages left to right, top to bottom, into a near-square grid, one page per cell.

    Every cell is the size of the largest page; each page keeps its own size and sits at its
    cell's top left on white, so no page is resampled twice (the processor resizes the grid).
    The grid has ``ceil(sqrt(n))`` columns.

    >>> tile_pages([Image.new("RGB", (100, 200))] * 3).size  # 2 columns, 2 rows
    (208, 408)
    """
    if not pages:
        raise ValueError("tile_pages needs at least one page")
    if len(pages) == 1:
        return pages[0]
    columns = math.ceil(math.sqrt(len(pages)))
    rows = math.ceil(len(pages) / columns)
    cell_width = max(page.width for page in pages)
    cell_height = max(page.height for page in pages)
    grid = Image.new(
        "RGB",
        (columns * cell_width + (columns - 1) * _GUTTER, rows * cell_height + (rows - 1) * _GUTTER),
        _GUTTER_COLOUR,
    )
    for index, page in enumerate(pages):
        row, column = divmod(index, columns)
        left = column * (cell_width + _GUTTER)
        top = row * (cell_height + _GUTTER)
        grid.paste(Image.new("RGB", (cell_width, cell_height), _PAPER), (left, top))
        grid.paste(page.convert("RGB"), (left, top))
    return grid
