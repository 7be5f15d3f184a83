"""Tests of reads by row address through the Lance dataset behind a LanceDB table."""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest

from llama_index_vlm.store.row_takes import lance_dataset, take_rows


@pytest.fixture
def table(tmp_path):
    """Three fragments (three writes), then a delete and an update: rows move and vanish."""
    table = lancedb.connect(tmp_path).create_table(
        "pages", pa.table({"page_id": [f"p{i}" for i in range(4)], "n": list(range(4))})
    )
    for start in (4, 8):
        ids = [f"p{i}" for i in range(start, start + 4)]
        table.add(pa.table({"page_id": ids, "n": list(range(start, start + 4))}))
    table.delete("page_id IN ('p1', 'p9')")
    table.update(where="page_id = 'p5'", values={"n": 50})
    return table


def row_ids(table) -> dict[str, int]:
    rows = table.search().select(["page_id"]).with_row_id(True).limit(None).to_arrow()
    return dict(zip(rows["page_id"].to_pylist(), rows["_rowid"].to_pylist(), strict=True))


def test_a_take_returns_the_rows_lancedb_takes_in_the_same_order(table):
    ids = row_ids(table)
    wanted = [ids[page_id] for page_id in ("p11", "p5", "p0", "p6")]
    taken = take_rows(lance_dataset(table), wanted, ["page_id", "n"])
    # In address order: p0 and p6 were written first, p5 was rewritten by the update.
    assert taken.to_pylist() == [
        {"page_id": "p0", "n": 0},
        {"page_id": "p6", "n": 6},
        {"page_id": "p11", "n": 11},
        {"page_id": "p5", "n": 50},
    ]
    through_lancedb = table.take_row_ids(wanted).select(["page_id", "n"]).to_arrow()
    assert taken.to_pylist() == through_lancedb.to_pylist()
    assert taken.schema == through_lancedb.schema


def test_a_dataset_of_a_checked_out_version_takes_that_versions_rows(table):
    version, ids = table.version, row_ids(table)
    table.update(where="page_id = 'p6'", values={"n": 60})
    table.delete("page_id = 'p7'")
    old = lancedb.connect(table._conn.uri).open_table("pages")
    old.checkout(version)
    taken = take_rows(lance_dataset(old), [ids["p6"], ids["p7"]], ["n"])
    assert taken["n"].to_pylist() == [6, 7]


class _NoLance:
    def to_lance(self):
        raise ImportError("The lance library is required to use this function.")


class _NoTake:
    def _take_rows(self, row_ids, columns):
        raise OSError("object store unreachable")


def test_without_a_dataset_or_a_take_the_caller_reads_through_lancedb():
    assert lance_dataset(_NoLance()) is None
    assert take_rows(None, [0], ["n"]) is None
    assert take_rows(_NoTake(), [0], ["n"]) is None
    assert take_rows(object(), [0], ["n"]) is None  # a pylance without _take_rows
