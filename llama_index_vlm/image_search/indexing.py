"""Indexing a collection of photos and figures: read, shrink, embed, store.

:func:`index_images` reads image files (folders recursively) with the page reader's own rules
(:class:`~llama_index_vlm.reader.PDFPageReader`: EXIF rotation, decompression-bomb limit, each
frame of a multi-frame TIFF), keeps a small copy of each image (the store's ``image``), embeds
that copy with an :class:`~llama_index_vlm.image_search.encoder.ImageTextEncoder`, and adds it
to a :class:`~llama_index_vlm.image_search.store.LanceDBImageStore`. An image's id is its file's
content hash plus its frame number, so a file already indexed is skipped without decoding it,
and one unreadable file is reported, not fatal.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.pages import doc_id_for_file, page_id_for, page_image

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index.core.schema import ImageNode

    from llama_index_vlm.image_search.encoder import ImageTextEncoder
    from llama_index_vlm.image_search.store import LanceDBImageStore

#: The longest side of the copy of each image kept in the store, in pixels: more than the
#: 224-448 pixels image-text models and answering models look at.
DEFAULT_THUMBNAIL_SIZE = 512


@dataclass
class ImageIndexReport:
    """What one :func:`index_images` call did.

    Attributes:
        added: ids of the images embedded and stored.
        unchanged: files already indexed (same content), skipped.
        failed: ``(path, reason)`` of each file that could not be read.
    """

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every file was indexed (or already was)."""
        return not self.failed

    def summary(self) -> str:
        """One line: how many images were added, skipped and failed."""
        return (
            f"{len(self.added)} image(s) indexed, {len(self.unchanged)} file(s) unchanged, "
            f"{len(self.failed)} failed"
        )


def index_images(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    encoder: ImageTextEncoder,
    store: LanceDBImageStore,
    batch_size: int = 32,
    thumbnail_size: int | None = DEFAULT_THUMBNAIL_SIZE,
    show_progress: bool = True,
) -> ImageIndexReport:
    """Embed and store the image files under ``paths`` (PDFs and other files are skipped).

    Args:
        paths: image files and folders (walked recursively, hidden entries skipped).
        encoder: the image-text encoder; its fingerprint is checked against the store first.
        store: where the images go.
        batch_size: images per encoder call and per commit.
        thumbnail_size: the longest side of the stored copy (None keeps the full image).
        show_progress: a progress bar over files.

    Raises:
        ModelMismatchError: the store holds another encoder's vectors (nothing is embedded).
    """
    from llama_index_vlm.reader import IMAGE_EXTENSIONS, PDFPageReader

    store.check_fingerprint(encoder.fingerprint)
    reader = PDFPageReader(image_format="JPEG")
    files = [path for path in reader.list_files(paths) if path.suffix.lower() in IMAGE_EXTENSIONS]
    report = ImageIndexReport()
    pending: list[ImageNode] = []
    for path in tqdm(files, desc="Indexing images", unit="file", disable=not show_progress):
        try:
            doc_id = doc_id_for_file(path)
            if store.get_nodes([page_id_for(doc_id, 1)]):
                report.unchanged.append(str(path))
                continue
            # A list first: a file that fails half-way adds none of its frames.
            nodes = [_image_node(doc, thumbnail_size) for doc in reader.read_file(path, doc_id)]
            pending.extend(nodes)
        except UnreadableDocumentError as error:
            report.failed.append((error.path, error.reason))
            continue
        if len(pending) >= batch_size:
            report.added += _embed_and_store(pending, encoder, store, batch_size)
            pending = []
    if pending:
        report.added += _embed_and_store(pending, encoder, store, batch_size)
    return report


def _image_node(document: Any, thumbnail_size: int | None) -> ImageNode:
    """The reader's document of one image (frame) as an image-store node with a small copy."""
    from llama_index.core.schema import ImageNode

    from llama_index_vlm.images import encode_image

    metadata = document.metadata
    image = page_image(document)
    if thumbnail_size is not None:
        image.thumbnail((thumbnail_size, thumbnail_size))
    kept = {
        "file_path": metadata["file_path"],
        "file_name": metadata["file_name"],
        "width": metadata["width"],
        "height": metadata["height"],
    }
    if metadata.get("page_count", 1) > 1:
        kept["page_number"] = metadata["page_number"]
    return ImageNode(
        id_=document.node_id,
        image=base64.b64encode(encode_image(image, "JPEG")).decode("ascii"),
        image_mimetype="image/jpeg",
        image_path=metadata["file_path"],
        metadata=kept,
    )


def _embed_and_store(
    nodes: list[ImageNode], encoder: ImageTextEncoder, store: LanceDBImageStore, batch_size: int
) -> list[str]:
    from llama_index_vlm.images import decode_image

    images = [decode_image(node.image) for node in nodes]
    vectors = encoder.embed_images(images, batch_size=batch_size, show_progress=False)
    for node, vector in zip(nodes, vectors, strict=True):
        node.embedding = vector.tolist()
    return store.add(nodes, fingerprint=encoder.fingerprint)


def load_image_file(path: str | os.PathLike[str]) -> Any:
    """An image file as an RGB PIL image, upright (EXIF), as indexing reads it.

    Raises:
        UnreadableDocumentError: not a readable image.
    """
    from llama_index_vlm.reader import PDFPageReader

    documents = PDFPageReader(image_format="PNG", last_page=1).read_file(Path(path))
    return page_image(next(iter(documents)))
