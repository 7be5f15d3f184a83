"""Rows taken by address through pylance, the Lance dataset behind a LanceDB table.

A retriever's answer reads its few result pages by row address (``PageTable.read_pages``).
LanceDB's ``take_row_ids`` plans each take as a query: 2.7 ms and 2.9 ms of CPU for ten pages'
node columns at 10k pages here, against 0.97 ms and 1.2 ms for the same rows taken from the
Lance dataset itself. Through the retriever at 10k pages, 2.3-2.7 ms less per query and 7-10%
more queries a second from 8 threads (``benchmarks/retriever_fast.py --compare-lance-takes``,
``benchmarks/RESULTS.md``).

The dataset comes from LanceDB's own ``Table.to_lance()`` at the snapshot's version, so it
reads the same files with the same storage options. Where it cannot be had (pylance missing,
a table LanceDB cannot hand over) or a take fails, :func:`take_rows` returns ``None`` and the
caller reads through LanceDB as before: this path only ever saves time.

Example:
    >>> import lancedb, pyarrow as pa, tempfile
    >>> table = lancedb.connect(tempfile.mkdtemp()).create_table("t", pa.table({"x": [1, 2, 3]}))
    >>> row_ids = table.search().with_row_id(True).to_arrow().column("_rowid").to_pylist()
    >>> take_rows(lance_dataset(table), [row_ids[2]], ["x"]).to_pylist()
    [{'x': 3}]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

logger = logging.getLogger(__name__)


def lance_dataset(table: Any) -> Any | None:
    """The Lance dataset of a LanceDB ``table`` handle at its version, or ``None`` where
    LanceDB cannot hand one over (pylance not installed, a remote table)."""
    try:
        return table.to_lance()
    except Exception as error:  # ImportError, NotImplementedError, a storage error
        logger.debug("reads by row address go through LanceDB: no Lance dataset (%s)", error)
        return None


def take_rows(dataset: Any | None, row_ids: Sequence[int], columns: list[str]) -> pa.Table | None:
    """``columns`` of the rows at ``row_ids`` (LanceDB's ``_rowid`` values) in ``dataset``, in
    the order of their addresses (as LanceDB returns them), or ``None`` when the dataset cannot
    take them (then read through LanceDB)."""
    if dataset is None:
        return None
    try:
        # Lance's take by row id: the same ids as LanceDB's take_row_ids, without its planner.
        # In address order the reads go forward through each file: 1,000 ColPali pages' vectors
        # in 0.42-0.88 s instead of 0.59-1.06 s in a random order (benchmarks/RESULTS.md).
        return dataset._take_rows(sorted(row_ids), columns=columns)
    except Exception as error:  # a pylance without it, a storage error: LanceDB reads instead
        logger.debug("a take by row address went through LanceDB instead: %s", error)
        return None
