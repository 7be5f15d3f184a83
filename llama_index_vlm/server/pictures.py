"""Page pictures the server sends: the stored image, a thumbnail, a query's similarity map."""

from __future__ import annotations

import io
from typing import Any

from llama_index.core.schema import BaseNode
from PIL import Image

from llama_index_vlm.images import encode_image
from llama_index_vlm.interpretability import (
    draw_region,
    hottest_region,
    overlay_heatmap,
    similarity_maps,
)
from llama_index_vlm.pages import node_image, page_image


def page_picture(node: BaseNode, size: int | None) -> tuple[bytes, str]:
    """The page's stored image as it is, or shrunk to fit ``size`` x ``size`` (JPEG)."""
    if size is None:
        return node_image(node)
    image = page_image(node)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return encode_image(image, "JPEG", quality=85), "image/jpeg"


def similarity_map_picture(
    encoder: Any, node: BaseNode, query: str, size: int | None
) -> tuple[bytes, tuple[int, int, int, int]]:
    """PNG of the page under the heatmap of the query's summed per-token similarity, with the
    hottest region outlined, and that region in page pixels (as ``highlight_sources`` finds it).
    """
    image = page_image(node)
    (query_vectors,) = encoder.embed_queries([query], show_progress=False)
    summed = similarity_maps(query_vectors, encoder.embed_image_patches(image)).sum(axis=0)
    region = hottest_region(summed, image.size)
    picture = draw_region(overlay_heatmap(image, summed), region, width=max(2, image.width // 200))
    if size is not None:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), region
