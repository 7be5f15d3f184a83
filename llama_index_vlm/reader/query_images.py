"""An image used as a query, opened with the checks a document's file passes.

``QueryBundle(image_path=...)`` names a file the user (or a web form) chose, so it gets the
reader's guards: a named pipe, a device or a folder is refused before it is opened (reading a
pipe would block forever), an image over the pixel budget before it is decoded, and any error
of a malformed file is an :class:`~llama_index_vlm.errors.UnreadableDocumentError`.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.images import to_rgb
from llama_index_vlm.reader.files import check_file
from llama_index_vlm.reader.image_files import IMAGE_EXTENSIONS, open_image
from llama_index_vlm.reader.sources import reading_errors


def load_query_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at ``path`` (its first frame), upright and in RGB.

    Raises:
        UnreadableDocumentError: not an image file (a PDF, a folder, a pipe, a missing path),
            over the pixel budget, or malformed.
    """
    checked = check_file(path)
    if checked.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UnreadableDocumentError(
            str(checked),
            f"an image query must be an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})",
        )
    with reading_errors(checked), open_image(checked) as image:
        return to_rgb(ImageOps.exif_transpose(image))
