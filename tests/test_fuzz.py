"""Fuzzing (issue 7): random metadata filter trees and query strings against a real store.

Properties, for any filter a user can build and any query string:

- the only errors are the package's own (``VLMError`` subclasses, which for bad values are also
  ``ValueError``s), never a LanceDB, Arrow, tokenizer or Python error;
- a filter never widens: filtered results are a subset of all pages, the retriever returns
  exactly the pages the store's filter selects (when it asks for all of them), and where a
  simple reference semantics exists (LlamaIndex's, for comparisons and lists) it agrees;
- nothing is written: the table version never changes.

Bounded: a fixed number of examples, no deadline (the machine is shared).
"""

from __future__ import annotations

import math
import operator as operator_module

import pytest
from filter_reference import combine
from hostile import HOSTILE_STRINGS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import ImageDocument
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from page_documents import document_pages
from pydantic import ValidationError

from llama_index_vlm.errors import VLMError
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore

pytestmark = pytest.mark.timeout(180)

# page_id -> (file_name, page_number, user metadata). Types differ under one key on purpose.
PAGES = {
    "a-p1": ("a.pdf", 1, {"tag": "alpha", "year": 2020, "tags": ["a", "b"]}),
    "a-p2": ("a.pdf", 2, {"tag": "x' OR '1'='1", "year": "2021"}),
    "b-p1": ("O'Brien.pdf", 1, {"tag": "", "year": 2021.5, "tags": []}),
    "b-p2": ("O'Brien.pdf", 2, {"year": None}),
    "c-p1": ("back\\slash.pdf", 1, {"tag": "nul\x00in", "score": -3}),
    "c-p2": ("back\\slash.pdf", 2, {"tag": "ünïcødé \u2019quoted\u2019", "score": 1e300}),
}
COLUMN_KEYS = ["file_name", "page_number", "doc_id", "page_id", "node_id", "ref_doc_id", "dpi"]
JSON_KEYS = ["tag", "year", "tags", "score", "missing"]


def _documents() -> list[ImageDocument]:
    """The pages of ``PAGES``, two per document, each with its own user metadata."""
    file_names = {page_id.split("-")[0]: file_name for page_id, (file_name, *_) in PAGES.items()}
    documents = [
        page
        for doc_id, file_name in file_names.items()
        for page in document_pages(
            doc_id, 2, file_path=f"/corpus/{file_name}", size=(32, 32), text="", dpi=None
        )
    ]
    for page in documents:
        page.metadata.update(PAGES[page.node_id][2])
    return documents


@pytest.fixture(scope="module")
def store(tmp_path_factory, colpali_encoder) -> LanceDBPageStore:
    page_store = LanceDBPageStore(uri=str(tmp_path_factory.mktemp("fuzz") / "index"))
    documents = _documents()
    assert ingest_documents(documents, colpali_encoder, page_store, show_progress=False).ok
    return page_store


# ------------------------------------------------------------------------------ strategies

_strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from(["a.pdf", "O'Brien.pdf", "alpha", "x' OR '1'='1", "", "2021", "a", "b"]),
    # Lone surrogates, which Python strings may hold and UTF-8 cannot.
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
)
_numbers = st.one_of(
    st.integers(min_value=-3, max_value=2030),
    st.integers(),  # beyond int64 too
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1, 2, 2020, 2021, 2021.5, -3, 1e300]),
)
_values = st.one_of(
    st.none(),
    _strings,
    _numbers,
    st.lists(_strings, max_size=4),
    st.lists(st.integers(min_value=-3, max_value=2030), max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=3),
)
_keys = st.one_of(
    st.sampled_from(COLUMN_KEYS + JSON_KEYS),
    st.text(max_size=10),  # mostly keys no page has, many of them invalid
    st.sampled_from(HOSTILE_STRINGS),
)


# Values the pages hold, so that filters often match some pages and not others.
_STORED = sorted(
    {str(v) for p in PAGES.values() for v in [p[0], *p[2].values()] if isinstance(v, str)}
)
_stored_text = st.sampled_from(_STORED)
_stored_number = st.sampled_from([1, 2, 2020, 2021, 2021.5, -3, 1e300])

_COMMON_OPERATORS = [FilterOperator.EQ, FilterOperator.NE, FilterOperator.IN, FilterOperator.NIN]
_COMMON_OPERATORS += [FilterOperator.GT, FilterOperator.LT]


@st.composite
def _leaf(draw) -> MetadataFilter:
    """Mostly filters a user could mean (a known key, a value of its type), often not."""
    kind = draw(st.sampled_from(["text column", "number column", "json", "json", "anything"]))
    if kind == "text column":
        key = draw(st.sampled_from(["file_name", "doc_id", "page_id", "node_id", "ref_doc_id"]))
        texts = st.one_of(_stored_text, _strings)
        value = draw(st.one_of(texts, st.lists(texts, max_size=3)))
    elif kind == "number column":
        key = draw(st.sampled_from(["page_number", "page_count", "dpi"]))
        value = draw(st.one_of(_stored_number, _numbers, st.lists(st.integers(-3, 5), max_size=3)))
    else:
        key = draw(st.sampled_from(JSON_KEYS) if kind == "json" else _keys)
        value = draw(st.one_of(_stored_text, _stored_number, _values))
    operator = draw(st.one_of(st.sampled_from(_COMMON_OPERATORS), st.sampled_from(FilterOperator)))
    if operator in (FilterOperator.IN, FilterOperator.NIN) and not isinstance(value, list):
        value = [value] if draw(st.booleans()) and value is not None else value
    try:
        return MetadataFilter(key=key, value=value, operator=operator)
    except ValidationError:
        # Pydantic refuses it (e.g. a list mixing types): no user can pass it to us.
        return MetadataFilter(key=key, value=None, operator=FilterOperator.IS_EMPTY)


def _as_tree(item: MetadataFilter | MetadataFilters) -> MetadataFilters:
    return item if isinstance(item, MetadataFilters) else MetadataFilters(filters=[item])


# Filter trees; nested lists may be empty (AND of nothing is true, OR of nothing false), the
# top-level one is not (an empty top-level list means "no filter", LlamaIndex's convention).
_trees = (
    st.recursive(
        _leaf(),
        lambda children: st.builds(
            MetadataFilters,
            filters=st.lists(children, max_size=3),
            condition=st.sampled_from(FilterCondition),
        ),
        max_leaves=4,
    )
    .map(_as_tree)
    .filter(lambda tree: tree.filters)
)


# ------------------------------------------------------------------------------- reference


def _metadata(page_id: str) -> dict:
    file_name, page_number, metadata = PAGES[page_id]
    doc_id = page_id.split("-")[0]
    columns = {"file_name": file_name, "page_number": page_number, "page_count": 2}
    columns.update(width=32, height=32)  # the page image's size (page_documents)
    ids = {"doc_id": doc_id, "ref_doc_id": doc_id, "page_id": page_id, "node_id": page_id}
    return {**columns, **ids, **metadata}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(stored, wanted) -> bool:
    if _is_number(stored) and _is_number(wanted):
        return float(stored) == float(wanted)
    return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted


def _leaf_reference(page_id: str, leaf: MetadataFilter) -> bool | None:
    """LlamaIndex's semantics for simple leaves; None where there is no simple reference."""
    metadata = _metadata(page_id)
    operator, wanted = FilterOperator(leaf.operator), leaf.value
    if leaf.key not in set(_metadata("a-p1")) - {"tags"} | {"score", "missing"}:
        return None
    if isinstance(wanted, float) and not math.isfinite(wanted):
        return None
    if isinstance(wanted, str) and not _encodable(wanted):
        return None
    if isinstance(wanted, list) and not all(
        not isinstance(v, str) or _encodable(v) for v in wanted
    ):
        return None
    present = leaf.key in metadata and metadata[leaf.key] is not None
    stored = metadata.get(leaf.key)
    if operator == FilterOperator.EQ and not isinstance(wanted, list) and wanted is not None:
        return present and _same(stored, wanted)
    if operator == FilterOperator.NE and not isinstance(wanted, list) and wanted is not None:
        return not (present and _same(stored, wanted))
    if operator in (FilterOperator.IN, FilterOperator.NIN) and isinstance(wanted, list):
        inside = present and any(_same(stored, value) for value in wanted)
        return inside if operator == FilterOperator.IN else not inside
    if operator in _ORDER and _is_number(wanted):
        return present and _is_number(stored) and _ORDER[operator](stored, wanted)
    return None


_ORDER = {
    FilterOperator.GT: operator_module.gt,
    FilterOperator.GTE: operator_module.ge,
    FilterOperator.LT: operator_module.lt,
    FilterOperator.LTE: operator_module.le,
}


def _reference(page_id: str, filters: MetadataFilters) -> bool | None:
    results = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            result = _reference(page_id, item)
        else:
            result = _leaf_reference(page_id, item)
        if result is None:
            return None
        results.append(result)
    return combine(filters, results)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------------------------- tests


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(filters=_trees, other=_trees)
def test_random_filters_raise_only_our_errors_and_never_widen(store, filters, other):
    version, every_page = store.version, set(PAGES)
    try:
        found = store.page_ids(filters=filters)
    except VLMError as error:
        event(f"refused: {type(error).__name__}")
        assert store.version == version
        return
    assert len(found) == len(set(found)) and set(found) <= every_page
    # Combining filters: AND only narrows, OR only widens, NOT is the complement.
    negated = MetadataFilters(filters=[filters], condition=FilterCondition.NOT)
    assert set(store.page_ids(filters=negated)) == every_page - set(found)
    try:
        found_other = set(store.page_ids(filters=other))
    except VLMError:
        found_other = None
    if found_other is not None:
        for condition, expected in [
            (FilterCondition.AND, set(found) & found_other),
            (FilterCondition.OR, set(found) | found_other),
        ]:
            both = MetadataFilters(filters=[filters, other], condition=condition)
            assert set(store.page_ids(filters=both)) == expected, condition
    if filters.filters and all(_reference(p, filters) is not None for p in PAGES):
        share = "no" if not found else "all" if len(found) == len(PAGES) else "some"
        event(f"checked against the reference: {share} pages match")
        expected = {p for p in PAGES if _reference(p, filters)}
        assert set(found) == expected, filters
    else:
        event("subset only")
    assert store.count(filters=filters) == len(found)
    assert store.version == version


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    filters=st.one_of(st.none(), _trees),
    query=st.one_of(
        st.text(max_size=40),
        st.text(st.characters(codec=None), max_size=40),  # surrogates and controls too
        st.sampled_from(HOSTILE_STRINGS),
    ),
    search_mode=st.sampled_from(["exact", "fast"]),
)
def test_random_queries_and_filters_through_the_retriever(
    store, colpali_encoder, filters, query, search_mode
):
    version = store.version
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=len(PAGES),
        filters=filters,
        search_mode=search_mode,
        fast_min_pages=1,
    )
    try:
        hits = retriever.retrieve(query)
    except VLMError as error:
        # Empty queries, unsupported filters: both are bad values, so also ValueErrors.
        assert isinstance(error, ValueError), repr(error)
        assert store.version == version
        return
    found = [hit.node.node_id for hit in hits]
    assert len(found) == len(set(found))
    allowed = set(PAGES) if filters is None else set(store.page_ids(filters=filters))
    # All pages are asked for, so exactly the filter's pages come back: never more, none lost.
    assert set(found) == allowed
    assert all(math.isfinite(hit.score) for hit in hits)
    assert store.version == version
