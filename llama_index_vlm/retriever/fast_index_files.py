"""The fast index persisted beside its store, so a new process does not pool every page again.

Layout, in ``<store uri>/<table name>.fast-index/`` (local stores only):

- ``seg-<id>/``: one *segment* per refresh that found new pages, written once and never
  changed: ``codes.npy`` (float16 pooled codes), ``code_offsets.npy``, ``vectors.npy``
  (float16 full vectors, memory-mapped for the exact rerank, so a query reads no LanceDB
  rows), ``vector_offsets.npy``, and ``centroids-<codebook>.npy`` (each code's centroid in
  that codebook).
- ``codebook-<id>.npy``: the centroid codebook.
- ``manifest.json``: the table version it reflects, the codebook, and for every page its
  content hash and place (segment, position). Replaced atomically (write, then rename).

A reader takes the manifest as it finds it and diffs its page hashes against the store's at
the version it searches: pages whose hash matches are taken from the files, the rest read
from the store and pooled (then saved as a new segment). Two processes may write at once:
segment names are unique, each manifest is complete in itself, and the last rename wins; the
pages the other one saved are simply pooled again later. Segments no manifest names are
deleted once an hour old. Any unreadable or mismatching file set is ignored, never trusted.

A rerank tells the OS which pages' vectors it is about to read (``posix_fadvise`` with
``WILLNEED``, where the OS has it) before touching them. Where they are not in the page cache
(a store larger than memory, or the first queries after a restart), the reads then go to the
disk together instead of one page fault after another: 75 uncached pages took 359-512 ms here
through page faults and 19-32 ms announced first, and a 10k-page retriever's uncached query
529 against 52 ms. Cached, the announcement costs 0.3-0.6 ms a query (``benchmarks/RESULTS.md``,
issue 15).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_index_vlm.search import FastPageIndex

logger = logging.getLogger(__name__)

FORMAT = 1
_MANIFEST = "manifest.json"
_ORPHAN_AGE_S = 3600
#: Segments of fewer pages than this are merged into one once there are more of them than
#: ``_MAX_SMALL_SEGMENTS`` (a store written in many small commits would otherwise leave one
#: segment per commit, and every new process would open them all).
_SMALL_SEGMENT_PAGES = 64
_MAX_SMALL_SEGMENTS = 32


@dataclass
class SavedPage:
    """Where one page's codes and vectors live in the files."""

    segment: str
    position: int
    content_hash: str


class _Segment:
    """One segment's arrays, memory-mapped."""

    def __init__(self, directory: Path, codebook: str | None):
        self.codes = np.load(directory / "codes.npy", mmap_mode="r")
        self.code_offsets = np.load(directory / "code_offsets.npy")
        mapped = np.load(directory / "vectors.npy", mmap_mode="r")
        # A plain array over the mapping: a slice of a np.memmap runs numpy's Python-level
        # memmap bookkeeping, for each of the ~75 pages a rerank reads.
        self.vectors = mapped.view(np.ndarray)
        self.vector_offsets = np.load(directory / "vector_offsets.npy")
        path = directory / f"centroids-{codebook}.npy"
        self.centroid_ids = np.load(path) if codebook and path.exists() else None
        self._vectors_start, self._row_bytes = mapped.offset, mapped.strides[0]
        self._vectors_fd = _open_for_advice(directory / "vectors.npy")
        if self._vectors_fd is not None:
            weakref.finalize(self, os.close, self._vectors_fd)

    def page_vectors(self, position: int) -> np.ndarray:
        return self.vectors[self.vector_offsets[position] : self.vector_offsets[position + 1]]

    def will_read(self, position: int) -> None:
        """Ask the OS to start reading the page's vectors into its cache (see the module doc)."""
        if self._vectors_fd is None:
            return
        first, last = self.vector_offsets[position], self.vector_offsets[position + 1]
        start = self._vectors_start + int(first) * self._row_bytes
        length = int(last - first) * self._row_bytes
        os.posix_fadvise(self._vectors_fd, start, length, os.POSIX_FADV_WILLNEED)


def _open_for_advice(path: Path) -> int | None:
    """A descriptor to advise the OS about ``path``'s reads; None where it takes no advice."""
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


class FastIndexFiles:
    """Reads and writes the persisted fast index of one store table (see the module doc)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.version = -1
        self.pages: dict[str, SavedPage] = {}
        self.codebook: str | None = None
        self.trained_rows = 0
        self._segments: dict[str, _Segment] = {}

    @classmethod
    def beside(cls, uri: str, table_name: str) -> FastIndexFiles | None:
        """The files of a local store (``None`` for an object-store URI)."""
        if "://" in uri and not uri.startswith("file://"):
            return None
        return cls(Path(uri.removeprefix("file://")) / f"{table_name}.fast-index")

    # -- reading --------------------------------------------------------------------------

    def load(self, index: FastPageIndex, hashes: dict[str, str]) -> list[str]:
        """Fill the empty ``index`` with every saved page whose hash matches ``hashes``.

        Returns the page ids it added; the caller loads the others. Nothing is added when the
        files are missing, unreadable or were written for another index configuration.
        """
        try:
            manifest = json.loads((self.directory / _MANIFEST).read_text())
            if (manifest["format"], manifest["pool_factor"]) != (FORMAT, index.pool_factor):
                return []
            codebook = manifest["codebook"]
            pages = {i: SavedPage(*entry) for i, entry in manifest["pages"].items()}
            names = {page.segment for page_id, page in pages.items() if page_id in hashes}
            segments = {name: _Segment(self.directory / name, codebook) for name in names}
            if codebook:
                centroids = np.load(self.directory / f"codebook-{codebook}.npy")
                index.set_codebook(centroids, manifest["trained_rows"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.info("fast index files in %s not used: %s", self.directory, error)
            return []
        usable = [i for i, page in pages.items() if hashes.get(i) == page.content_hash]
        for name, segment in segments.items():
            chosen = [i for i in usable if pages[i].segment == name]
            if not chosen:
                continue
            positions = [pages[i].position for i in chosen]
            bounds = [(segment.code_offsets[p], segment.code_offsets[p + 1]) for p in positions]
            ids = segment.centroid_ids
            index.add_codes(
                chosen,
                [segment.codes[first:last] for first, last in bounds],
                None if ids is None else np.concatenate([ids[a:b] for a, b in bounds]),
            )
        self.version, self.codebook = manifest["table_version"], codebook
        self.trained_rows = manifest["trained_rows"]
        self.pages = {i: pages[i] for i in usable}
        self._segments = segments
        return usable

    def reader(self):
        """A function from page ids to their saved full vectors (memory-mapped; ``None`` for a
        page not saved), which asks the OS to read them all before it slices the first.

        It sees the files as they are now: later saves replace, never change, what it reads.
        """
        pages, segments = self.pages, self._segments

        def vectors(page_ids: list[str]) -> list[np.ndarray | None]:
            places = []
            for page_id in page_ids:
                page = pages.get(page_id)
                segment = None if page is None else segments.get(page.segment)
                places.append(None if segment is None else (segment, page.position))
            for place in places:
                if place is not None:
                    place[0].will_read(place[1])
            return [None if place is None else place[0].page_vectors(place[1]) for place in places]

        return vectors

    # -- writing --------------------------------------------------------------------------

    def add_segment(
        self, index: FastPageIndex, new_vectors: dict[str, np.ndarray], hashes: dict[str, str]
    ) -> None:
        """Save these pages (in ``index`` already) as a segment; :meth:`commit` names it."""
        if not new_vectors:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_segment(index, new_vectors, hashes)
        except OSError as error:
            logger.info("fast index segment not saved in %s: %s", self.directory, error)

    def commit(self, version: int, index: FastPageIndex, hashes: dict[str, str]) -> None:
        """Save the codebook if new and a manifest of every saved page still at ``version``.

        Failures (read-only folder, full disk) are logged and leave the previous files as
        they were: persistence only ever saves time.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._save_codebook(index):
                self._reassign_segments(index)
            self.pages = {i: page for i, page in self.pages.items() if i in hashes}
            self._merge_small_segments(index, hashes)
            self.version = version
            self._write_manifest(index)
            self._delete_orphans()
        except OSError as error:
            logger.info("fast index not saved in %s: %s", self.directory, error)

    def _save_codebook(self, index: FastPageIndex) -> bool:
        if index.centroids is None or index.trained_rows == self.trained_rows:
            return False
        name = uuid.uuid4().hex[:12]
        _save_atomically(self.directory / f"codebook-{name}.npy", index.centroids)
        self.codebook, self.trained_rows = name, index.trained_rows
        return True

    def _write_segment(self, index, new_vectors: dict[str, np.ndarray], hashes) -> None:
        name = f"seg-{uuid.uuid4().hex[:12]}"
        staging = self.directory / f".{name}.tmp"
        staging.mkdir()
        page_ids = [i for i in new_vectors if i in index]
        codes = [index.page_codes(i) for i in page_ids]
        vectors = [np.asarray(new_vectors[i], dtype=np.float16) for i in page_ids]
        np.save(staging / "codes.npy", np.concatenate([c for c, _ in codes]))
        np.save(staging / "code_offsets.npy", _offsets([c for c, _ in codes]))
        np.save(staging / "vectors.npy", np.concatenate(vectors))
        np.save(staging / "vector_offsets.npy", _offsets(vectors))
        if self.codebook and all(ids is not None for _, ids in codes):
            ids = np.concatenate([ids for _, ids in codes])
            np.save(staging / f"centroids-{self.codebook}.npy", ids)
        os.rename(staging, self.directory / name)
        # Replace, never change, the dicts: a reader() made before keeps a consistent view.
        self._segments = {**self._segments, name: _Segment(self.directory / name, self.codebook)}
        saved = {i: SavedPage(name, position, hashes[i]) for position, i in enumerate(page_ids)}
        self.pages = {**self.pages, **saved}

    def _merge_small_segments(self, index: FastPageIndex, hashes: dict[str, str]) -> None:
        sizes: dict[str, int] = {}
        for page in self.pages.values():
            sizes[page.segment] = sizes.get(page.segment, 0) + 1
        small = {name for name, size in sizes.items() if size < _SMALL_SEGMENT_PAGES}
        if len(small) <= _MAX_SMALL_SEGMENTS:
            return
        moving = [i for i, page in self.pages.items() if page.segment in small]
        moved = dict(zip(moving, self.reader()(moving), strict=True))
        self._write_segment(index, {i: v for i, v in moved.items() if v is not None}, hashes)
        # The old segments are no longer named by the manifest; orphan clean-up deletes them.
        self._segments = {n: s for n, s in self._segments.items() if n not in small}

    def _reassign_segments(self, index: FastPageIndex) -> None:
        """After a new codebook: each segment's codes' centroids in it."""
        for name, segment in self._segments.items():
            saved = {p.position: i for i, p in self.pages.items() if p.segment == name}
            ids = np.zeros(segment.codes.shape[0], dtype=np.int32)
            for position, page_id in saved.items():
                if page_id in index:
                    first, last = segment.code_offsets[position : position + 2]
                    ids[first:last] = index.page_codes(page_id)[1]
            path = self.directory / name / f"centroids-{self.codebook}.npy"
            _save_atomically(path, ids)
            segment.centroid_ids = ids

    def _write_manifest(self, index: FastPageIndex) -> None:
        manifest = {
            "format": FORMAT,
            "table_version": self.version,
            "pool_factor": index.pool_factor,
            "codebook": self.codebook,
            "trained_rows": self.trained_rows,
            "written_at": time.time(),
            "pages": {i: [p.segment, p.position, p.content_hash] for i, p in self.pages.items()},
        }
        staging = self.directory / f".{_MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
        staging.write_text(json.dumps(manifest))
        os.replace(staging, self.directory / _MANIFEST)

    def _delete_orphans(self) -> None:
        """Segments and codebooks no manifest of ours names, once an hour old."""
        used = {page.segment for page in self.pages.values()} | {f"codebook-{self.codebook}.npy"}
        cutoff = time.time() - _ORPHAN_AGE_S
        for path in self.directory.iterdir():
            if path.name in used or path.name == _MANIFEST or path.stat().st_mtime > cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _offsets(matrices: list[np.ndarray]) -> np.ndarray:
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([matrix.shape[0] for matrix in matrices], out=offsets[1:])
    return offsets


def _save_atomically(path: Path, array: np.ndarray) -> None:
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(staging, "wb") as handle:
        np.save(handle, array)
    os.replace(staging, path)
