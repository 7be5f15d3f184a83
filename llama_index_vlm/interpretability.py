"""Similarity maps: where on a page each query token found its best match.

Late interaction scores a page by summing, over query tokens, the best similarity between that
token and any image patch. Keeping the per-patch similarities instead of only their maximum
gives one heatmap per query token over the page's patch grid: the picture of *why* a page was
retrieved, and of where on the page the answer is.

The maths is pure NumPy (arrays in, arrays out); drawing uses Pillow only.

Example::

    patch_grid = encoder.embed_image_patches(page)           # (rows, cols, embedding_dim)
    (query_vectors,) = encoder.embed_queries(["revenue"])
    maps = similarity_maps(query_vectors, patch_grid)        # (n_tokens, rows, cols)
    overlay_heatmap(page, maps.max(axis=0)).save("revenue.png")
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llama_index_vlm.images import to_rgb

# A perceptually ordered dark-blue -> teal -> yellow ramp (close to matplotlib's viridis), so
# maps need no plotting library.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def similarity_maps(query_vectors: np.ndarray, patch_grid: np.ndarray) -> np.ndarray:
    """Per-query-token similarity over a page's patch grid.

    Args:
        query_vectors: ``(n_tokens, embedding_dim)`` query embedding.
        patch_grid: ``(rows, cols, embedding_dim)`` page patch embeddings (see
            :meth:`~llama_index_vlm.encoder.ColPaliEncoder.embed_image_patches`).

    Returns:
        ``(n_tokens, rows, cols)`` float32 dot products. ``maps.max(axis=(1, 2)).sum()`` is the
        page's MaxSim score restricted to image patches.
    """
    query_vectors = np.asarray(query_vectors, dtype=np.float32)
    patch_grid = np.asarray(patch_grid, dtype=np.float32)
    if query_vectors.ndim != 2 or patch_grid.ndim != 3:
        raise ValueError(
            "query_vectors must be (n_tokens, embedding_dim) and patch_grid "
            "(rows, cols, embedding_dim)"
        )
    if query_vectors.shape[1] != patch_grid.shape[2]:
        raise ValueError(
            f"query dim {query_vectors.shape[1]} differs from patch dim {patch_grid.shape[2]}"
        )
    return np.einsum("td,rcd->trc", query_vectors, patch_grid)


def normalise_map(similarity_map: np.ndarray) -> np.ndarray:
    """Rescale one map to 0..1 (min to max); a constant map becomes all zeros."""
    similarity_map = np.asarray(similarity_map, dtype=np.float64)
    low, high = float(similarity_map.min()), float(similarity_map.max())
    if high <= low:
        return np.zeros_like(similarity_map)
    return (similarity_map - low) / (high - low)


def colorize(similarity_map: np.ndarray) -> np.ndarray:
    """Map a 2-D array to ``(rows, cols, 3)`` uint8 colours along the viridis-like ramp."""
    scaled = normalise_map(similarity_map) * (len(_RAMP) - 1)
    positions = np.arange(len(_RAMP))
    channels = [np.interp(scaled, positions, _RAMP[:, channel]) for channel in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay_heatmap(
    page: Image.Image, similarity_map: np.ndarray, opacity: float = 0.55
) -> Image.Image:
    """Draw a ``(rows, cols)`` map over the whole page, upscaled smoothly to the page's size."""
    page = to_rgb(page)
    heat = Image.fromarray(colorize(similarity_map)).resize(page.size, Image.Resampling.BILINEAR)
    return Image.blend(page, heat, opacity)


def hottest_region(
    similarity_map: np.ndarray, page_size: tuple[int, int], quantile: float = 0.9
) -> tuple[int, int, int, int]:
    """The page-pixel box ``(left, top, right, bottom)`` around the map's hottest patches.

    The box bounds every patch at or above the map's ``quantile``; patch ``(r, c)`` of a
    ``rows x cols`` grid covers the same fraction of the page (both ColPali and ColQwen2 resize
    whole pages without cropping).
    """
    similarity_map = np.asarray(similarity_map, dtype=np.float64)
    rows, cols = similarity_map.shape
    threshold = np.quantile(similarity_map, quantile)
    hot_rows, hot_cols = np.nonzero(similarity_map >= threshold)
    width, height = page_size
    return (
        int(hot_cols.min() * width / cols),
        int(hot_rows.min() * height / rows),
        int(np.ceil((hot_cols.max() + 1) * width / cols)),
        int(np.ceil((hot_rows.max() + 1) * height / rows)),
    )


def draw_region(
    page: Image.Image, box: tuple[int, int, int, int], color: str = "red", width: int = 4
) -> Image.Image:
    """A copy of ``page`` with ``box`` outlined."""
    page = to_rgb(page).copy()
    ImageDraw.Draw(page).rectangle(box, outline=color, width=width)
    return page


def similarity_map_panels(
    page: Image.Image,
    maps: np.ndarray,
    labels: Sequence[str],
    columns: int = 4,
    panel_width: int = 320,
) -> Image.Image:
    """One heatmap panel per query token, captioned with its token, in a grid.

    Args:
        page: the page image.
        maps: ``(n_tokens, rows, cols)`` from :func:`similarity_maps`.
        labels: one caption per map (e.g. ``encoder.query_token_labels(query)``).
        columns: panels per row.
        panel_width: width of each panel in pixels; height keeps the page's aspect ratio.
    """
    if len(labels) != len(maps):
        raise ValueError(f"{len(labels)} labels for {len(maps)} maps")
    if len(maps) == 0:
        raise ValueError("no maps to draw")
    page = to_rgb(page)
    panel_height = max(1, round(panel_width * page.height / page.width))
    caption = 18
    font = ImageFont.load_default(size=13)
    thumbnail = page.resize((panel_width, panel_height), Image.Resampling.BILINEAR)
    columns = max(1, min(columns, len(maps)))
    rows = -(-len(maps) // columns)
    sheet = Image.new("RGB", (columns * panel_width, rows * (panel_height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for position, (similarity_map, label) in enumerate(zip(maps, labels, strict=True)):
        left = (position % columns) * panel_width
        top = (position // columns) * (panel_height + caption)
        title = drawable_text(f"{label}  max {similarity_map.max():.2f}", font)
        draw.text((left + 4, top + 2), title, fill="black", font=font)
        sheet.paste(overlay_heatmap(thumbnail, similarity_map), (left, top + caption))
    return sheet


def drawable_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    r"""``text`` with every character ``font`` has no glyph for replaced, so that it draws with
    no missing-glyph boxes: accents are dropped (``é`` -> ``e``), anything else is escaped
    (``\u6536``). Pillow's built-in font, the one font every installation has, holds ASCII.

    Example:
        >>> drawable_text("café 収入", ImageFont.load_default(size=13))
        'cafe \\u53ce\\u5165'
    """
    missing = _glyph(font, "\uffff")
    drawn = []
    for character in text:
        if character.isascii() and character.isprintable():
            drawn.append(character)
            continue
        base = unicodedata.normalize("NFKD", character)
        base = "".join(part for part in base if not unicodedata.combining(part))
        if base and all(_glyph(font, part) != missing for part in base):
            drawn.append(base)
        else:
            drawn.append(character.encode("ascii", "backslashreplace").decode("ascii"))
    return "".join(drawn)


def _glyph(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, character: str) -> bytes:
    mask = font.getmask(character)
    return bytes(str(mask.size), "ascii") + bytes(mask)
