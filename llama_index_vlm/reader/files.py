"""Which files the reader reads: the supported types, folder walks, and the checks a path passes
before it is opened.

A folder is walked recursively in sorted order (by name at each level), skipping hidden (dot)
files and folders, files of other types, and anything that is not a regular file or a folder
(named pipes, devices, sockets, dangling links), so a walk never blocks on a pipe or reads an
endless device. A path given explicitly is kept whatever it is, so that :func:`check_file`
reports it as a failure of that file.

Symbolic links: a link met inside a folder being walked is followed only when its target
(fully resolved) lies inside that same folder; a link out of it (to ``/etc``, a home folder, a
network share) is skipped with a warning, unless ``follow_symlinks=True``. Indexing a folder
someone else filled then reads only what is in that folder. A path given explicitly is
followed wherever it points: the caller named it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.pages import os_reason
from llama_index_vlm.reader.image_files import IMAGE_EXTENSIONS
from llama_index_vlm.reader.pdf import PDF_EXTENSIONS

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = PDF_EXTENSIONS | IMAGE_EXTENSIONS

#: A file, a folder, or a list of them: what the reader's ``load_data`` takes.
PathOrPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute path, once it is a non-empty file of a supported type.

    Raises :class:`UnreadableDocumentError` for a missing path or a dangling link, a folder, an
    unsupported file type, or an empty file (also what a named pipe or a device looks like).
    """
    path = Path(os.path.abspath(os.fspath(path)))
    if not path.exists():
        reason = "dangling symbolic link" if path.is_symlink() else "no such file or directory"
        raise UnreadableDocumentError(str(path), reason)
    if path.is_dir():
        raise UnreadableDocumentError(
            str(path), "is a directory; pass it to list_files() or load_data() instead"
        )
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise UnreadableDocumentError(
            str(path),
            f"unsupported file type {suffix or '(no extension)'!r}; PDFPageReader reads "
            f"{', '.join(sorted(SUPPORTED_EXTENSIONS))}",
        )
    try:
        size = path.stat().st_size
    except OSError as error:
        raise UnreadableDocumentError(str(path), os_reason(error)) from error
    if size == 0:
        raise UnreadableDocumentError(str(path), "empty file (0 bytes)")
    return path


def list_files(path_or_paths: PathOrPaths, *, follow_symlinks: bool = False) -> list[Path]:
    """Expand folders (:func:`walk`) into the files to read, as absolute paths, in order.

    A file reached twice (listed and inside a listed folder, or through a symbolic link) is
    kept once, at its first place.
    """
    files: list[Path] = []
    seen_real: set[str] = set()
    for given in as_path_list(path_or_paths):
        path = Path(os.path.abspath(os.fspath(given)))
        found = walk(path, follow_symlinks=follow_symlinks) if path.is_dir() else [path]
        for file in found:
            real = os.path.realpath(file)
            if real not in seen_real:
                seen_real.add(real)
                files.append(file)
    return files


def walk(root: Path, *, follow_symlinks: bool = False) -> list[Path]:
    """Supported files under ``root``, depth first in name order, without hidden entries.

    A folder reached twice through symbolic links is walked once, so link loops end; a folder
    that cannot be listed is skipped with a warning. A symbolic link whose target lies outside
    ``root`` is skipped with a warning unless ``follow_symlinks``.
    """
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()
    inside = None if follow_symlinks else os.path.realpath(root)
    # An explicit stack (not recursion) so a very deep tree cannot hit the recursion limit.
    stack: list[Path] = [root]
    while stack:
        path = stack.pop()
        if path is not root and not path.is_dir():
            files.append(path)
            continue
        entries = _new_folder_entries(path, visited)
        if entries is not None:
            stack.extend(reversed(_walkable(entries, inside)))
    return files


def _new_folder_entries(folder: Path, visited: set[tuple[int, int]]) -> list[os.DirEntry] | None:
    """The entries of ``folder`` in name order, or ``None`` if it was walked already or cannot
    be listed.
    """
    try:
        status = folder.stat()
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        logger.warning("skipping folder %s: %s", folder, os_reason(error))
        return None
    # Identify folders by device and inode: a link back to an ancestor is seen again.
    if (status.st_dev, status.st_ino) in visited:
        return None
    visited.add((status.st_dev, status.st_ino))
    return entries


def _walkable(entries: list[os.DirEntry], inside: str | None) -> list[Path]:
    """The folders and supported regular files among ``entries``, skipping hidden ones and,
    unless ``inside`` is None, symbolic links to anywhere outside the folder ``inside``.
    """
    children = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = Path(entry.path)
        if inside is not None and entry.is_symlink() and not _links_inside(child, inside):
            continue
        try:
            is_dir = entry.is_dir()
            is_file = entry.is_file()
        except OSError:
            continue
        if is_dir:
            children.append(child)
        elif is_file and child.suffix.lower() in SUPPORTED_EXTENSIONS:
            children.append(child)
        elif entry.is_symlink() and not child.exists():
            logger.warning("skipping dangling symbolic link %s", child)
    return children


def _links_inside(link: Path, folder: str) -> bool:
    """Whether the symbolic link ``link`` resolves to somewhere inside ``folder`` (a real
    path); a warning names a link that does not.
    """
    target = os.path.realpath(link)
    if os.path.commonpath([target, folder]) == folder:
        return True
    logger.warning(
        "skipping symbolic link %s: it points outside %s (to %s); follow_symlinks=True "
        "(`index --follow-symlinks`) follows such links",
        link,
        folder,
        target,
    )
    return False


def as_path_list(path_or_paths: PathOrPaths) -> list[str | os.PathLike[str]]:
    """One path, or an iterable of them, as a list."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [path_or_paths]
    return list(path_or_paths)


def describe_paths(paths: list[str | os.PathLike[str]]) -> str:
    """The paths a caller gave, for a message: one quoted path, or the quoted list."""
    names = [os.fspath(path) for path in paths]
    return repr(names[0]) if len(names) == 1 else repr(names)
