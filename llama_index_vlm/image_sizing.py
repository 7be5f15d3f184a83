"""Page images reduced to what the model reads, as soon as they are decoded and before batching.

A retriever's image processor resizes every page to a small input (ColPali: 448 x 448;
ColQwen2: at most its ``max_pixels``), but only after it has copied the full page several
times (NumPy array, float array, PIL image): for a page at Pillow's pixel limit that is about
a gigabyte per page, held for every page of a batch. :func:`reduce_for_processor` makes that
resize first, the same way the processor would (same target size, same resampling filter), so
a batch holds small images whatever the page sizes, and the processor's own resize becomes a
no-op: with transformers' Pillow image processors the embeddings are bit-identical.

An image more than :data:`MAX_ASPECT_RATIO` times longer than wide (which Qwen2-VL's processor
refuses) is padded with white paper to that ratio, after shrinking its long side so the padded
image stays within :data:`FALLBACK_MAX_PIXELS`: a 1 x 1,000,000 strip is never padded to
5,000 x 1,000,000.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from PIL import Image

from llama_index_vlm.images import to_rgb

#: The longest side of an image, over its shortest, that every supported processor accepts.
MAX_ASPECT_RATIO = 200
#: The most pixels kept of an image whose processor's input size is not known (and of a padded
#: strip): 2048 x 2048.
FALLBACK_MAX_PIXELS = 2048 * 2048

_PAPER = (255, 255, 255)


def reduce_for_processor(image: Image.Image, image_processor: Any) -> Image.Image:
    """``image`` in RGB, no longer than :data:`MAX_ASPECT_RATIO` times its width, and no larger
    than ``image_processor`` resizes it to (or :data:`FALLBACK_MAX_PIXELS`). Never enlarged.

    >>> from types import SimpleNamespace
    >>> colpali_like = SimpleNamespace(size={"height": 448, "width": 448}, resample=3)
    >>> reduce_for_processor(Image.new("L", (9400, 9400)), colpali_like).size
    (448, 448)
    >>> reduce_for_processor(Image.new("L", (1, 1_000_000)), colpali_like).size
    (448, 448)
    """
    rgb = _within_aspect_ratio(to_rgb(image))
    width, height = rgb.size
    target = processor_input_size(image_processor, width, height)
    if target is None or processor_input_size(image_processor, *target) != target:
        # Unknown, or a size the processor would resize again (Qwen2-VL's smart_resize is not
        # idempotent for the thinnest pages): bound the image without claiming its size.
        target = _scaled_to_at_most(width, height, FALLBACK_MAX_PIXELS)
    if target[0] * target[1] >= width * height:
        return rgb
    # Rounding a thin page's short side down can tip it just over the ratio: pad it back.
    return _within_aspect_ratio(rgb.resize(target, resample=_resample(image_processor)))


def processor_input_size(image_processor: Any, width: int, height: int) -> tuple[int, int] | None:
    """The ``(width, height)`` ``image_processor`` resizes a ``width`` x ``height`` image to,
    or None when it does not say.

    Fixed-size processors (ColPali's SigLIP) give ``size["height"]`` and ``size["width"]``;
    dynamic-resolution ones (ColQwen2's Qwen2-VL) give the ``smart_resize`` of their own module,
    with their patch and merge sizes and pixel bounds.
    """
    size = getattr(image_processor, "size", None)
    fixed = (_size_value(size, "width"), _size_value(size, "height"))
    if fixed[0] and fixed[1]:
        return int(fixed[0]), int(fixed[1])
    smart_resize = getattr(sys.modules.get(type(image_processor).__module__), "smart_resize", None)
    patch_size = getattr(image_processor, "patch_size", None)
    merge_size = getattr(image_processor, "merge_size", None)
    min_pixels = _size_value(size, "shortest_edge") or getattr(image_processor, "min_pixels", None)
    max_pixels = _size_value(size, "longest_edge") or getattr(image_processor, "max_pixels", None)
    if not (smart_resize and patch_size and merge_size and min_pixels and max_pixels):
        return None
    try:
        resized_height, resized_width = smart_resize(
            height,
            width,
            factor=int(patch_size) * int(merge_size),
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
        )
    except (TypeError, ValueError):  # another signature, or an aspect ratio it refuses
        return None
    return int(resized_width), int(resized_height)


def _size_value(size: Any, key: str) -> Any:
    # Image processors hold sizes as dicts or as transformers' SizeDict dataclass.
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _resample(image_processor: Any) -> int:
    resample = getattr(image_processor, "resample", None)
    try:
        return int(resample)
    except (TypeError, ValueError):
        return int(Image.Resampling.BICUBIC)


def _scaled_to_at_most(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down (aspect ratio kept, at least 1 x 1) to at most
    ``max_pixels`` pixels; unchanged if it fits.
    """
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _within_aspect_ratio(image: Image.Image) -> Image.Image:
    """``image``, padded at the right or bottom with white paper if its long side is over
    :data:`MAX_ASPECT_RATIO` times its short side: Qwen2-VL's processor raises a ValueError for
    such an image, which would fail every page of the batch it is in. A long side over what
    the padded image may hold (:data:`FALLBACK_MAX_PIXELS`) is shrunk first.
    """
    width, height = image.size
    if max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
        return image
    longest = math.isqrt(MAX_ASPECT_RATIO * FALLBACK_MAX_PIXELS)
    if max(width, height) > longest:
        scale = longest / max(width, height)
        shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(shrunk, resample=Image.Resampling.BICUBIC)
        width, height = image.size
    short = math.ceil(max(width, height) / MAX_ASPECT_RATIO)
    paper = Image.new("RGB", (max(width, short), max(height, short)), _PAPER)
    paper.paste(image, (0, 0))
    return paper
