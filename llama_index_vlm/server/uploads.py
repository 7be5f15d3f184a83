"""Uploaded files: saved under names the server chooses, in a folder the server owns.

A client's file name is only ever a label for people (:func:`display_name`); the file on disk
is ``<upload folder>/<random hex><suffix>``, created exclusively, so no upload can name, replace
or escape to another path. The suffix is one the reader supports, taken from the client's name
or, failing that, its content type; what the bytes really are is the reader's business, as for
files on disk.
"""

from __future__ import annotations

import os
import secrets
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from llama_index_vlm.reader import SUPPORTED_EXTENSIONS

#: Metadata key of an uploaded document's name as the client gave it (its file_name is the
#: server's own name for the file).
UPLOAD_NAME_KEY = "upload_name"

_MAX_NAME_LENGTH = 200
_SUFFIX_BY_CONTENT_TYPE = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/tiff": ".tiff",
    "image/bmp": ".bmp",
}


class UnsupportedUploadError(ValueError):
    """An uploaded file is of a type the reader cannot read (HTTP 415)."""


@dataclass(frozen=True)
class SavedUpload:
    """An uploaded file on disk, and the name it was given."""

    path: Path
    name: str


def display_name(client_name: str | None) -> str:
    """The client's file name as a label: its last path part, printable, at most 200 chars.

    >>> display_name("C:\\\\Users\\\\me\\\\..\\\\report\\x00.pdf")
    'report.pdf'
    """
    name = (client_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip()
    return name[:_MAX_NAME_LENGTH] or "upload"


def upload_suffix(client_name: str | None, content_type: str | None) -> str:
    """The suffix the saved file gets: the client name's, else the content type's.

    Raises :class:`UnsupportedUploadError` when neither is a type the reader reads.
    """
    suffix = Path(display_name(client_name)).suffix.lower()
    if suffix in SUPPORTED_EXTENSIONS:
        return suffix
    by_type = _SUFFIX_BY_CONTENT_TYPE.get((content_type or "").split(";")[0].strip().lower())
    if by_type is not None:
        return by_type
    raise UnsupportedUploadError(
        f"{display_name(client_name)!r} is not a PDF or an image; upload "
        f"{', '.join(sorted(SUPPORTED_EXTENSIONS))} files"
    )


def save_upload(source: BinaryIO, folder: Path, suffix: str, name: str) -> SavedUpload:
    """Copy ``source`` to a new file named by the server in ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f"{secrets.token_hex(16)}{suffix}"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:  # pragma: no cover - 128 random bits
            continue
    with os.fdopen(descriptor, "wb") as target:
        shutil.copyfileobj(source, target, length=1 << 20)
    return SavedUpload(path=path, name=name)


def is_upload(path: str | os.PathLike[str], folder: Path) -> bool:
    """Whether ``path`` lies inside the upload ``folder``."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(folder)))


def remove_upload(path: str | os.PathLike[str], folder: Path) -> bool:
    """Delete ``path`` if it is a file inside ``folder``; False for anything else."""
    if not is_upload(path, folder) or not os.path.isfile(path):
        return False
    Path(path).unlink(missing_ok=True)
    return True
