"""Page images: png, jpg/jpeg, webp, tif/tiff and bmp files, read at their own resolution.

Each frame of a multi-frame TIFF is a page; any other file is one page. A photo's EXIF rotation
is applied, so a page photographed in portrait is stored upright. An image over Pillow's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused, checked from the header
before any pixel is decoded, and again for each TIFF frame. A TIFF with more frames to read
than the page limit is refused after reading at most that many frame headers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.images import to_rgb
from llama_index_vlm.pages import os_reason
from llama_index_vlm.reader.rendered import RenderedPage, check_page_limit, pixel_budget

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})


def open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only), refusing decompression bombs.

    Raises :class:`UnreadableDocumentError` for a file Pillow cannot identify or read, or one
    over the pixel budget. The caller owns the returned image and must ``close()`` it.
    """
    try:
        with warnings.catch_warnings():
            # We refuse anything over the budget ourselves, below, so Pillow's warning for
            # images between 1x and 2x the limit would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise UnreadableDocumentError(str(path), _bomb_reason(None)) from error
    except UnidentifiedImageError as error:
        raise UnreadableDocumentError(
            str(path),
            f"not a valid {path.suffix.lower().lstrip('.')} image (Pillow cannot identify it)",
        ) from error
    except OSError as error:
        raise UnreadableDocumentError(str(path), os_reason(error)) from error
    except Exception as error:  # noqa: BLE001 - Pillow's plugins raise anything on bad headers
        raise UnreadableDocumentError(
            str(path), f"not a valid image ({type(error).__name__}: {error})"
        ) from error
    try:
        _check_bomb(path, image)
    except UnreadableDocumentError:
        image.close()
        raise
    return image


def frame_count(image: Image.Image) -> int:
    """How many pages an opened image file holds: its frames if a TIFF, else 1."""
    # Only TIFF pages are document pages; other formats' extra frames (animated WebP,
    # a camera JPEG's MPO previews) are not, so those files are one page.
    if image.format == "TIFF":
        return getattr(image, "n_frames", 1)
    return 1


def count_image_pages(
    path: Path,
    *,
    first_page: int = 1,
    last_page: int | None = None,
    max_pages: int | None = None,
) -> int:
    """How many pages of the image file lie in the range, reading only its headers.

    Raises :class:`UnreadableDocumentError` for more than ``max_pages`` pages in the range.
    """
    with open_image(path) as image:
        _check_frame_limit(path, image, first_page, last_page, max_pages)
        return len(_page_range(frame_count(image), first_page, last_page))


def image_pages(
    path: Path,
    *,
    first_page: int = 1,
    last_page: int | None = None,
    max_pages: int | None = None,
) -> Iterator[RenderedPage]:
    """The pages (frames) of an image file in the range, each upright and in ``RGB``.

    Raises :class:`UnreadableDocumentError` for a file :func:`open_image` refuses, more than
    ``max_pages`` pages in the range, a frame over the pixel budget, or pixel data that is
    truncated or corrupted (naming the page in a multi-page TIFF). The file is closed when the
    generator finishes or is closed.
    """
    with open_image(path) as image:
        _check_frame_limit(path, image, first_page, last_page, max_pages)
        page_count = frame_count(image)
        for page_number in _page_range(page_count, first_page, last_page):
            yield _frame_page(path, image, page_number, page_count)


def _check_frame_limit(
    path: Path, image: Image.Image, first_page: int, last_page: int | None, max_pages: int | None
) -> None:
    """Refuse a TIFF with more than ``max_pages`` frames in the range, without counting them
    all: Pillow walks every frame header to count, which takes seconds per ten thousand.
    """
    if max_pages is None or image.format != "TIFF":
        return
    if last_page is not None and last_page - first_page + 1 <= max_pages:
        return
    # One frame at a time: seeking far past the end makes Pillow record a wrong frame count.
    beyond = first_page - 1 + max_pages  # the first frame over the limit
    try:
        for frame in range(1, beyond + 1):
            image.seek(frame)
    except EOFError:
        return  # within the limit
    finally:
        image.seek(0)
    check_page_limit(path, max_pages, more=True)


def _page_range(page_count: int, first_page: int, last_page: int | None) -> range:
    last = page_count if last_page is None else min(page_count, last_page)
    return range(first_page, last + 1)


def _frame_page(path: Path, image: Image.Image, page_number: int, page_count: int) -> RenderedPage:
    """Frame ``page_number`` of ``image``, decoded, turned upright and in ``RGB``."""
    try:
        image.seek(page_number - 1)
        _check_bomb(path, image)
        # exif_transpose loads the frame and returns a copy turned upright (phone photos of
        # pages carry their rotation in EXIF), so the next seek() cannot change an image
        # already yielded.
        frame = ImageOps.exif_transpose(image)
        rgb = to_rgb(frame)
    except UnreadableDocumentError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises TypeError, KeyError... on bad data
        where = f"page {page_number} of {page_count}: " if page_count > 1 else ""
        raise UnreadableDocumentError(
            str(path), f"{where}truncated or corrupted image ({error})"
        ) from error
    return RenderedPage(page_number, page_count, rgb, image_dpi(frame))


def image_dpi(image: Image.Image) -> int | None:
    """The resolution an image file records (its ``dpi`` info), rounded, or ``None``."""
    resolution = image.info.get("dpi")
    try:
        return round(float(resolution[0])) if resolution else None
    except (TypeError, ValueError, IndexError):
        return None


def _check_bomb(path: Path, image: Image.Image) -> None:
    budget = pixel_budget()
    width, height = image.size
    if budget is not None and width * height > budget:
        raise UnreadableDocumentError(str(path), _bomb_reason((width, height)))


def _bomb_reason(size: tuple[int, int] | None) -> str:
    budget = pixel_budget()
    what = f"{size[0]} x {size[1]} image" if size else "image"
    return (
        f"{what} is over Pillow's decompression-bomb limit of {budget} pixels "
        "(PIL.Image.MAX_IMAGE_PIXELS); raise that limit if you trust this file"
    )
