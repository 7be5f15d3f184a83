"""Tests of ``llama_index_vlm.store.filters``: the SQL text, and its results on a real LanceDB
table.

The results are checked against a small Python reference of LlamaIndex's filter semantics
(``build_metadata_filter_fn``), extended to nested filters, for every operator on page fields
(typed columns) and on user metadata (the JSON column).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from filter_reference import combine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import ImageDocument
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn
from page_documents import encoded_noise, page_document, unit_vectors

from llama_index_vlm.errors import UnsupportedFilterError
from llama_index_vlm.pages import PAGE_FIELD_ALIASES, PAGE_FIELDS
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.filters import in_list, page_where, quote_literal, to_lance_where

INJECTIONS = [
    "x' OR '1'='1",
    "' OR TRUE --",
    "a'); DELETE FROM pages; --",
    "\\' OR 1=1 --",
    "x\\",
    "' OR json_extract(metadata, '$.tag') IS NOT NULL OR '",
    '" OR "1"="1',
]

# User metadata of the test pages: mixed types under one key on purpose (year is a string on one
# page, a float on another), quotes, backslashes, unicode, arrays, nulls and missing keys.
USER_METADATA = {
    "a-p1": {"year": 2020, "tag": "alpha", "score": 0.5, "tags": ["a", "b"], "author": "O'Neil"},
    "a-p2": {"year": 2021, "tag": "beta", "score": 1.5, "tags": ["b"], "date": "2023-01-01"},
    "a-p3": {"year": "2022", "tag": "", "tags": [], "note": None, "nested": {"a": 1}},
    "b-p1": {"year": 2023.0, "tag": "Alpha beta", "author": "back\\slash", "tags": ["c", 7]},
    "b-p2": {},
    "b-p3": {"year": -5, "tag": "x' OR '1'='1", "author": "çödé ünï", "date": "2024-06-30"},
    "b-p4": {"year": 2021, "tag": "gamma", "score": 3, "my key.v2": "spaced", "date": "2023"},
}
PAGE_FIELD_VALUES = {
    "a-p1": {"file_name": "a.pdf", "page_number": 1, "dpi": 72},
    "a-p2": {"file_name": "a.pdf", "page_number": 2, "dpi": 144.5},
    "a-p3": {"file_name": "a.pdf", "page_number": 3, "dpi": None},
    "b-p1": {"file_name": "O'Brien's b.pdf", "page_number": 1, "dpi": 300},
    "b-p2": {"file_name": "O'Brien's b.pdf", "page_number": 2, "dpi": 300},
    "b-p3": {"file_name": "O'Brien's b.pdf", "page_number": 3, "dpi": 72},
    "b-p4": {"file_name": "O'Brien's b.pdf", "page_number": 4, "dpi": 72},
}


def _page(page_id: str, user: dict, fields: dict, seed: int = 0) -> ImageDocument:
    doc_id, _, number = page_id.partition("-p")
    fields = {"width": 8, "height": 8, "dpi": None, **fields}
    return page_document(
        doc_id,
        int(fields.pop("page_number", number)),
        4 if doc_id == "b" else 3,
        file_path=f"/docs/{fields['file_name']}",
        image=encoded_noise(seed, size=(8, 8)),
        text=f"text of {page_id}",
        **fields,
        **user,
    )


def _vectors(seed: int) -> np.ndarray:
    return unit_vectors(seed, n_vectors=3, dim=4)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LanceDBPageStore:
    page_store = LanceDBPageStore(uri=str(tmp_path_factory.mktemp("filters") / "index"))
    pages = [
        _page(page_id, USER_METADATA[page_id], PAGE_FIELD_VALUES[page_id], seed)
        for seed, page_id in enumerate(USER_METADATA)
    ]
    page_store.add(pages, page_vectors=[_vectors(seed) for seed in range(len(pages))])
    return page_store


@pytest.fixture(scope="module")
def metadata_by_id(store) -> dict[str, dict]:
    return {node.node_id: node.metadata for node in store.get_nodes()}


# ---------------------------------------------------------------------- reference semantics


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(stored, value) -> bool:
    if isinstance(value, str):
        return isinstance(stored, str) and stored == value
    return _is_number(stored) and float(stored) == float(value)


def _reference_leaf(metadata: dict, item: MetadataFilter) -> bool:
    key = PAGE_FIELD_ALIASES.get(item.key, item.key)
    stored, value, operator = metadata.get(key), item.value, item.operator
    if operator == FilterOperator.IS_EMPTY:
        return stored is None or stored == "" or stored == []
    if stored is None:
        return operator in (FilterOperator.NE, FilterOperator.NIN)
    if operator == FilterOperator.EQ:
        return _equal(stored, value)
    if operator == FilterOperator.NE:
        return not _equal(stored, value)
    if operator in (FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE):
        if isinstance(value, str):
            if not isinstance(stored, str):
                return False
            left, right = stored, value
        else:
            if not _is_number(stored):
                return False
            left, right = float(stored), float(value)
        return {
            FilterOperator.GT: left > right,
            FilterOperator.GTE: left >= right,
            FilterOperator.LT: left < right,
            FilterOperator.LTE: left <= right,
        }[operator]
    if operator == FilterOperator.IN:
        return any(_equal(stored, candidate) for candidate in value)
    if operator == FilterOperator.NIN:
        return not any(_equal(stored, candidate) for candidate in value)
    if operator == FilterOperator.TEXT_MATCH:
        return isinstance(stored, str) and value in stored
    if operator == FilterOperator.TEXT_MATCH_INSENSITIVE:
        return isinstance(stored, str) and value.lower() in stored.lower()
    if operator == FilterOperator.CONTAINS:
        return isinstance(stored, list) and any(_equal(item, value) for item in stored)
    if operator == FilterOperator.ANY:
        return isinstance(stored, list) and any(
            any(_equal(item, candidate) for item in stored) for candidate in value
        )
    if operator == FilterOperator.ALL:
        return isinstance(stored, list) and all(
            any(_equal(item, candidate) for item in stored) for candidate in value
        )
    raise AssertionError(f"no reference for {operator}")


def _reference(metadata: dict, filters: MetadataFilters) -> bool:
    results = [
        _reference(metadata, item)
        if isinstance(item, MetadataFilters)
        else _reference_leaf(metadata, item)
        for item in filters.filters
    ]
    return combine(filters, results)


def _expected(metadata_by_id: dict, filters: MetadataFilters) -> set[str]:
    return {page_id for page_id, meta in metadata_by_id.items() if _reference(meta, filters)}


def _found(store: LanceDBPageStore, filters: MetadataFilters) -> set[str]:
    return {node.node_id for node in store.get_nodes(filters=filters)}


def _filters(*items, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=condition)


def _leaf(key, value, operator="==") -> MetadataFilter:
    try:
        return MetadataFilter(key=key, value=value, operator=operator)
    except ValueError:
        # Lists mixing strings and numbers fail LlamaIndex's validation but can still be built
        # (model_construct); the translator handles them rather than crash.
        return MetadataFilter.model_construct(
            key=key, value=value, operator=FilterOperator(operator)
        )


# ---------------------------------------------------------------------- SQL text


def test_quote_literal_doubles_quotes_and_keeps_backslashes():
    assert quote_literal("x' OR '1'='1") == "'x'' OR ''1''=''1'"
    assert quote_literal("a\\b") == "'a\\b'"
    assert quote_literal("") == "''"


def test_quote_literal_refuses_a_non_string():
    with pytest.raises(UnsupportedFilterError):
        quote_literal(3)


def test_in_list_escapes_its_values():
    assert in_list("page_id", ["a", "b'c"]) == "page_id IN ('a', 'b''c')"


def test_in_list_of_nothing_is_false():
    assert in_list("page_id", []) == "FALSE"


def test_in_list_refuses_a_column_that_is_not_an_identifier():
    with pytest.raises(UnsupportedFilterError):
        in_list("page_id; DROP", ["a"])


def test_no_filters_is_none():
    assert to_lance_where(None, PAGE_FIELDS) is None
    assert to_lance_where(MetadataFilters(filters=[]), PAGE_FIELDS) is None


def test_sql_text_for_columns_and_json():
    where = to_lance_where(
        _filters(_leaf("page_number", 2, ">="), _leaf("tag", "a'b")), PAGE_FIELDS
    )
    assert where == (
        "COALESCE(page_number >= 2, FALSE) AND "
        "COALESCE(json_extract(metadata, '$[\"tag\"]') = '\"a''b\"', FALSE)"
    )


def test_a_float_against_an_integer_column_is_cast():
    # LanceDB refuses a float literal against an integer column.
    assert to_lance_where(_filters(_leaf("page_number", 1.5, ">")), PAGE_FIELDS) == (
        "COALESCE(CAST(page_number AS DOUBLE) > 1.5, FALSE)"
    )


def test_llama_index_names_of_page_fields_are_aliases():
    assert to_lance_where(
        _filters(_leaf("ref_doc_id", "d")), PAGE_FIELDS, aliases=PAGE_FIELD_ALIASES
    ) == ("COALESCE(doc_id = 'd', FALSE)")


def test_nested_filters_keep_their_grouping():
    nested = _filters(
        _leaf("page_number", 1),
        _filters(_leaf("tag", "a"), _leaf("tag", "b"), condition="or"),
        condition="not",
    )
    assert to_lance_where(nested, PAGE_FIELDS).startswith(
        "NOT (COALESCE(page_number = 1, FALSE) OR ("
    )


def test_page_where_combines_ids_documents_and_filters():
    assert page_where(_filters(_leaf("node_id", "x")), node_ids=["a"], doc_ids=["d"]) == (
        "page_id IN ('a') AND doc_id IN ('d') AND (COALESCE(page_id = 'x', FALSE))"
    )


def test_page_where_of_nothing_is_none():
    assert page_where(None) is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (_leaf("page_number", "3"), "must be a number"),
        (_leaf("file_name", 3), "must be a string"),
        (_leaf("page_number", [1, 2], "contains"), "not supported on the page field"),
        (_leaf("page_number", 1, "in"), "needs a list"),
        (_leaf("tag", ["a"], "=="), "not a list"),
        (_leaf("tag", None, "=="), "only works with 'is_empty'"),
        (_leaf("bad'key", "a"), "cannot be filtered"),
        (_leaf('bad"key', "a"), "cannot be filtered"),
        (_leaf("bad]key", "a"), "cannot be filtered"),
        (_leaf("", "a"), "cannot be filtered"),
        (_leaf("tag", 1.0, "text_match"), "needs a string"),
        (_leaf("score", float("nan"), ">"), "not a finite number"),
        (_leaf("score", float("inf"), "=="), "not a finite number"),
        (_leaf("page_number", 10**400, "=="), "too large"),
    ],
)
def test_unsupported_filters_raise_clear_errors(item, message):
    with pytest.raises(UnsupportedFilterError, match=message):
        to_lance_where(_filters(item), PAGE_FIELDS, aliases=PAGE_FIELD_ALIASES)


def test_unknown_key_without_json_column_raises():
    with pytest.raises(UnsupportedFilterError, match="unknown filter key"):
        to_lance_where(_filters(_leaf("tag", "a")), PAGE_FIELDS, json_column=None)


def test_unsupported_filter_error_is_a_value_error(store):
    with pytest.raises(ValueError):
        store.get_nodes(filters=_filters(_leaf("page_number", "3")))


# ---------------------------------------------------------------------- results on LanceDB

COLUMN_CASES = [
    ("page_number", 2),
    ("page_number", 2.5),
    ("dpi", 72),
    ("dpi", 144.5),
    ("file_name", "a.pdf"),
    ("file_name", "O'Brien's b.pdf"),
    ("doc_id", "a"),
    ("ref_doc_id", "b"),
    ("page_id", "b-p3"),
]
JSON_CASES = [
    ("year", 2021),
    ("year", 2022),
    ("year", 2023),
    ("year", "2022"),
    ("year", 2020.5),
    ("score", 1.5),
    ("tag", "alpha"),
    ("tag", ""),
    ("tag", "x' OR '1'='1"),
    ("author", "O'Neil"),
    ("author", "back\\slash"),
    ("author", "çödé ünï"),
    ("date", "2023-01-01"),
    ("date", "2023"),
    ("my key.v2", "spaced"),
    ("missing", "a"),
    ("missing", 1),
]
SCALAR_OPERATORS = ["==", "!=", ">", ">=", "<", "<="]


@pytest.mark.parametrize(("key", "value"), COLUMN_CASES + JSON_CASES)
@pytest.mark.parametrize("operator", SCALAR_OPERATORS)
def test_comparisons_match_reference(store, metadata_by_id, key, value, operator):
    filters = _filters(_leaf(key, value, operator))
    assert _found(store, filters) == _expected(metadata_by_id, filters)


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("page_number", [1, 3]),
        ("page_number", [1, 2.0]),
        ("dpi", [72, 300.0]),
        ("file_name", ["a.pdf", "nope"]),
        ("doc_id", []),
        ("year", [2021, "2022", 1999]),
        ("tag", ["alpha", "beta", "x' OR '1'='1"]),
        ("score", [0.5, 3]),
        ("tag", []),
    ],
)
@pytest.mark.parametrize("operator", ["in", "nin"])
def test_in_and_nin_match_reference(store, metadata_by_id, key, values, operator):
    filters = _filters(_leaf(key, values, operator))
    assert _found(store, filters) == _expected(metadata_by_id, filters)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("file_name", "brien"),
        ("file_name", "O'B"),
        ("tag", "lpha"),
        ("tag", "ALPHA"),
        ("tag", "' OR '"),
        ("author", "\\"),
        ("author", "ödé"),
        ("doc_id", "a"),
    ],
)
@pytest.mark.parametrize("operator", ["text_match", "text_match_insensitive"])
def test_text_match_matches_reference(store, metadata_by_id, key, value, operator):
    filters = _filters(_leaf(key, value, operator))
    assert _found(store, filters) == _expected(metadata_by_id, filters)


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("contains", "b"),
        ("contains", 7),
        ("contains", "z"),
        ("any", ["a", "c"]),
        ("any", []),
        ("all", ["a", "b"]),
        ("all", ["b"]),
        ("all", []),
    ],
)
def test_array_operators_match_reference(store, metadata_by_id, operator, value):
    filters = _filters(_leaf("tags", value, operator))
    assert _found(store, filters) == _expected(metadata_by_id, filters)


@pytest.mark.parametrize("key", ["tag", "note", "tags", "missing", "dpi", "file_name"])
def test_is_empty_matches_reference(store, metadata_by_id, key):
    filters = _filters(_leaf(key, None, "is_empty"))
    assert _found(store, filters) == _expected(metadata_by_id, filters)


NESTED = [
    _filters(_leaf("doc_id", "a"), _leaf("year", 2021, ">="), condition="and"),
    _filters(_leaf("page_number", 1), _leaf("tag", "gamma"), condition="or"),
    _filters(_leaf("doc_id", "a"), _leaf("tag", "alpha"), condition="not"),
    _filters(
        _leaf("doc_id", "b"),
        _filters(_leaf("year", 0, "<"), _leaf("score", 3), condition="or"),
        condition="and",
    ),
    _filters(
        _filters(_leaf("dpi", 72), _leaf("page_number", 4, "<"), condition="and"),
        _filters(_leaf("tags", "b", "contains"), _leaf("tag", "", "=="), condition="or"),
        condition="or",
    ),
    _filters(
        _filters(_leaf("missing", 1), condition="not"),
        _filters(_leaf("year", [2020, 2021], "nin"), condition="and"),
        condition="and",
    ),
    _filters(_filters(_leaf("tag", "alpha"), condition="not"), condition="not"),
    _filters(MetadataFilters(filters=[], condition="or"), _leaf("doc_id", "a"), condition="or"),
]


@pytest.mark.parametrize("filters", NESTED, ids=[f"nested{i}" for i in range(len(NESTED))])
def test_nested_and_or_not_match_reference(store, metadata_by_id, filters):
    assert _found(store, filters) == _expected(metadata_by_id, filters)


def test_reference_agrees_with_llama_index(metadata_by_id):
    """Our reference is LlamaIndex's own semantics on the cases where both are defined."""
    cases = [
        _leaf("tag", "alpha"),
        _leaf("tag", "alpha", "!="),
        _leaf("year", 2021, ">="),
        _leaf("page_number", 2, "<"),
        _leaf("file_name", ["a.pdf"], "in"),
        _leaf("tag", ["beta", "gamma"], "nin"),
        _leaf("tags", "b", "contains"),
        _leaf("note", None, "is_empty"),
    ]
    # LlamaIndex raises on str-vs-number order comparisons; use keys with one type only.
    homogeneous = {
        page_id: {k: v for k, v in meta.items() if k != "year" or isinstance(v, int)}
        for page_id, meta in metadata_by_id.items()
    }
    for condition, items in itertools.product(["and", "or", "not"], [cases[:3], cases[3:]]):
        filters = _filters(*items, condition=condition)
        llama = build_metadata_filter_fn(lambda page_id: homogeneous[page_id], filters)
        assert {p for p in homogeneous if llama(p)} == _expected(homogeneous, filters), filters


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("key", ["file_name", "doc_id", "tag", "author"])
def test_injection_values_match_nothing(store, key, value):
    expected = {"b-p3"} if (key, value) == ("tag", "x' OR '1'='1") else set()
    assert _found(store, _filters(_leaf(key, value))) == expected
    assert _found(store, _filters(_leaf(key, [value], "in"))) == expected
    everything = set(USER_METADATA)
    assert _found(store, _filters(_leaf(key, value, "!="))) == everything - expected


# ---------------------------------------------------------------------- arbitrary strings

_TEXT = st.text(max_size=20)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=_TEXT)
def test_arbitrary_values_never_widen(store, value):
    """Whatever the string, EQ/IN match exactly the pages holding it, on columns and JSON."""
    for key in ("file_name", "tag", "author"):
        holders = {
            page_id
            for page_id in USER_METADATA
            if {**USER_METADATA[page_id], **PAGE_FIELD_VALUES[page_id]}.get(key) == value
        }
        assert _found(store, _filters(_leaf(key, value))) == holders
        assert _found(store, _filters(_leaf(key, [value], "in"))) == holders
        assert _found(store, _filters(_leaf(key, value, "!="))) == set(USER_METADATA) - holders


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory) -> LanceDBPageStore:
    page_store = LanceDBPageStore(uri=str(tmp_path_factory.mktemp("probe") / "index"))
    pages = [
        _page(f"fixed-p{n}", {"tag": tag}, {"file_name": tag})
        for n, tag in enumerate(["plain", "x' OR '1'='1", ""], start=1)
    ]
    page_store.add(pages, page_vectors=[_vectors(n) for n in range(3)])
    return page_store


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=_TEXT.filter(lambda text: text not in ("plain", "x' OR '1'='1", "")))
def test_arbitrary_stored_values_match_exactly(probe_store, value):
    """A page holding an arbitrary string is found by exactly that string, and only it."""
    probe = _page("probe-p1", {"tag": value}, {"file_name": value})
    probe_store.add([probe], page_vectors=[_vectors(9)])
    for key in ("tag", "file_name"):
        assert _found(probe_store, _filters(_leaf(key, value))) == {"probe-p1"}
        assert "probe-p1" not in _found(probe_store, _filters(_leaf(key, value, "!=")))
        assert _found(probe_store, _filters(_leaf(key, value + "x"))) == set()
        assert "probe-p1" in _found(probe_store, _filters(_leaf(key, value, "text_match")))
    assert probe_store.count() == 4
