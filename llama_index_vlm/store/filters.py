"""LlamaIndex ``MetadataFilters`` -> a LanceDB ``where`` clause (SQL), as a pure function.

The page store keeps the page fields (``doc_id``, ``page_number``, ...) in typed columns and
every other metadata key in one JSON column (Lance stores it as JSONB). :func:`to_lance_where`
translates a filter tree into SQL over both, without touching LanceDB:

- Page-field keys compare their column directly (``page_number >= 3``).
- Any other key is read from the JSON column with ``json_extract(metadata, '$["key"]')``,
  which yields the value's JSON text (``"abc"`` with its quotes, ``3``, ``[1,2]``) or NULL when
  the key is missing. Strings compare as exact JSON text, numbers through
  ``TRY_CAST(... AS DOUBLE)``, so a value of another type never matches and never raises.
  (``json_get_string``/``json_get_int`` would be simpler, but they fail the whole query as soon
  as one row holds a value of another type under the same key.)

Operators: ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin``, ``text_match``,
``text_match_insensitive`` and ``is_empty`` on every key; ``contains``, ``any`` and ``all``
(array membership) on user metadata; nested ``MetadataFilters`` with ``and``, ``or`` and
``not``. Anything else raises :class:`~llama_index_vlm.errors.UnsupportedFilterError`.

Values are never pasted into SQL unescaped: strings become single-quoted literals with quotes
doubled (LanceDB's SQL has no backslash escapes), numbers are formatted by Python, and keys of
the JSON column must match :data:`JSON_KEY_PATTERN`. A value such as ``x' OR '1'='1`` is just a
string that matches nothing.

Semantics follow LlamaIndex's reference implementation (``build_metadata_filter_fn`` in
``llama_index.core.vector_stores.utils``): a missing key matches only ``!=`` and ``nin``; a value
of another type matches nothing; ``NOT`` matches rows where none of its filters match. Each leaf
is wrapped in ``COALESCE(..., FALSE)`` so SQL's three-valued logic cannot leak NULL through
``NOT``.

Known approximations on the JSON column, documented rather than hidden:

- Numbers compare as 64-bit floats, so integers above 2**53 lose precision.
- ``>``/``<`` and text match on strings compare the JSON-escaped text with the ``"`` characters
  removed: exact for strings without ``"``, ``\\`` or control characters.
- ``contains``/``any``/``all`` use Lance's ``json_array_contains``, which also matches the
  number ``1`` for the string ``"1"``.

Example:
    >>> from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
    >>> to_lance_where(
    ...     MetadataFilters(filters=[MetadataFilter(key="page_number", value=2, operator=">=")]),
    ...     columns={"page_number": "integer"},
    ... )
    'COALESCE(page_number >= 2, FALSE)'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from llama_index_vlm.errors import UnsupportedFilterError
from llama_index_vlm.pages import PAGE_FIELD_ALIASES, PAGE_FIELDS, ColumnType

# Keys of the JSON column: what a user's metadata keys reasonably look like. Quotes, backslashes
# and brackets are excluded because the key is spliced into a JSONPath inside a SQL literal.
JSON_KEY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .:/@#+\-]*")
# Column names are spliced into SQL bare, so they must be plain identifiers.
_COLUMN_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_COMPARISONS = {
    FilterOperator.EQ: "=",
    FilterOperator.NE: "<>",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}
_RANGE_OPERATORS = (FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE)


def quote_literal(value: str) -> str:
    """Return ``value`` as a LanceDB SQL string literal: single-quoted, quotes doubled.

    >>> quote_literal("x' OR '1'='1")
    "'x'' OR ''1''=''1'"
    """
    if not isinstance(value, str):
        raise UnsupportedFilterError(f"expected a string, got {type(value).__name__}: {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from undecodable bytes): LanceDB's SQL is UTF-8 and refuses them.
        raise UnsupportedFilterError(
            f"{value!r} is not valid Unicode (it holds lone surrogates); filter on valid text"
        ) from None
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    """SQL ``column IN ('a', 'b', ...)`` for string values; ``FALSE`` when ``values`` is empty.

    Used by the store for its own ``page_id``/``doc_id`` lookups, with the same escaping as
    filters.
    """
    _check_column(column)
    literals = [quote_literal(value) for value in values]
    if not literals:
        return "FALSE"
    return f"{column} IN ({', '.join(literals)})"


def to_lance_where(
    filters: MetadataFilters | None,
    columns: Mapping[str, ColumnType],
    *,
    json_column: str | None = "metadata",
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """Translate LlamaIndex ``filters`` into a LanceDB ``where`` clause.

    Args:
        filters: the filter tree; ``None`` or an empty top-level list means "no filter".
        columns: filter keys stored as their own column, with the column's type. A key maps to
            the column of the same name.
        json_column: the JSON column holding every other key; ``None`` makes other keys an
            error.
        aliases: extra names for columns (e.g. ``{"ref_doc_id": "doc_id"}``).

    Returns:
        The SQL text, or ``None`` when there is nothing to filter.

    Raises:
        UnsupportedFilterError: an operator, value or key that cannot be translated safely.
    """
    if filters is None or not filters.filters:
        return None
    for name in columns:
        _check_column(name)
    if json_column is not None:
        _check_column(json_column)
    translator = _Translator(columns, json_column, dict(aliases or {}))
    return translator.group(filters)


def page_where(
    filters: MetadataFilters | None,
    node_ids: Sequence[str] | None = None,
    doc_ids: Sequence[str] | None = None,
) -> str | None:
    """The page store's ``where`` clause: pages with one of ``node_ids``, of one of
    ``doc_ids``, and matching ``filters`` (on page fields or user metadata); None for all pages.

    >>> page_where(None, node_ids=["d-p1"], doc_ids=["d"])
    "page_id IN ('d-p1') AND doc_id IN ('d')"
    """
    parts = []
    if node_ids is not None:
        parts.append(in_list("page_id", node_ids))
    if doc_ids is not None:
        parts.append(in_list("doc_id", doc_ids))
    filter_sql = to_lance_where(filters, PAGE_FIELDS, aliases=PAGE_FIELD_ALIASES)
    if filter_sql is not None:
        parts.append(f"({filter_sql})")
    return " AND ".join(parts) if parts else None


def _check_column(name: str) -> None:
    if not isinstance(name, str) or not _COLUMN_PATTERN.fullmatch(name):
        raise UnsupportedFilterError(f"{name!r} is not a valid column name")


class _Translator:
    """Walks a filter tree; one instance per call, holding the column map."""

    def __init__(
        self,
        columns: Mapping[str, ColumnType],
        json_column: str | None,
        aliases: dict[str, str],
    ) -> None:
        self.columns = columns
        self.json_column = json_column
        self.aliases = aliases

    def group(self, filters: MetadataFilters) -> str:
        parts = [
            f"({self.group(item)})" if isinstance(item, MetadataFilters) else self.leaf(item)
            for item in filters.filters
        ]
        condition = filters.condition or FilterCondition.AND
        if condition == FilterCondition.AND:
            return " AND ".join(parts) if parts else "TRUE"
        if condition == FilterCondition.OR:
            return " OR ".join(parts) if parts else "FALSE"
        if condition == FilterCondition.NOT:
            # Leaves are never NULL (COALESCE), so NOT is plain boolean negation.
            return f"NOT ({' OR '.join(parts)})" if parts else "TRUE"
        raise UnsupportedFilterError(f"unsupported filter condition {condition!r}")

    def leaf(self, metadata_filter: MetadataFilter) -> str:
        if not isinstance(metadata_filter, MetadataFilter):
            raise UnsupportedFilterError(
                f"expected MetadataFilter or MetadataFilters, got {type(metadata_filter).__name__}"
            )
        key = metadata_filter.key
        operator = FilterOperator(metadata_filter.operator)
        value = metadata_filter.value
        column = self.aliases.get(key, key)
        if column in self.columns:
            return _ColumnLeaf(column, self.columns[column]).sql(operator, value, key)
        if self.json_column is None:
            raise UnsupportedFilterError(
                f"unknown filter key {key!r}; filterable keys are {sorted(self.columns)}"
            )
        if not isinstance(key, str) or not JSON_KEY_PATTERN.fullmatch(key):
            raise UnsupportedFilterError(
                f"metadata key {key!r} cannot be filtered: keys must match "
                f"{JSON_KEY_PATTERN.pattern} (letters, digits, '_', ' ', '.', ':', '/', '@', "
                "'#', '+', '-')"
            )
        return _JsonLeaf(self.json_column, key).sql(operator, value, key)


def _number_literal(value: float | int, key: str) -> str:
    """A finite number as SQL text; Python's repr is valid SQL (``1e+20``, ``-0.5``, ``7``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsupportedFilterError(f"filter on {key!r}: {value!r} is not a finite number")
    return repr(value)


def _float_literal(value: float | int, key: str) -> str:
    try:
        as_float = float(value)
    except OverflowError:
        raise UnsupportedFilterError(f"filter on {key!r}: {value!r} is too large") from None
    return _number_literal(as_float, key)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coalesce(expression: str) -> str:
    return f"COALESCE({expression}, FALSE)"


def _as_list(operator: FilterOperator, value: Any, key: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise UnsupportedFilterError(
            f"filter on {key!r}: operator {operator.value!r} needs a list of values, got {value!r}"
        )
    return list(value)


def _reject_list_value(operator: FilterOperator, value: Any, key: str) -> None:
    if isinstance(value, (list, tuple)):
        raise UnsupportedFilterError(
            f"filter on {key!r}: operator {operator.value!r} takes one value, not a list; "
            "use 'in'/'nin' for lists"
        )


class _ColumnLeaf:
    """One filter on a typed column."""

    def __init__(self, column: str, column_type: ColumnType) -> None:
        self.column = column
        self.column_type = column_type

    def value_sql(self, value: Any, key: str) -> tuple[str, str]:
        """(left-hand side, literal) comparing this column with ``value``, type-checked."""
        if self.column_type == "string":
            if not isinstance(value, str):
                raise UnsupportedFilterError(
                    f"filter on {key!r}: the column holds text, so the value must be a string, "
                    f"not {value!r}"
                )
            return self.column, quote_literal(value)
        if not _is_number(value):
            raise UnsupportedFilterError(
                f"filter on {key!r}: the column holds numbers, so the value must be a number, "
                f"not {value!r}"
            )
        if self.column_type == "integer" and isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                # Out of the column's range: compare as floats rather than fail in LanceDB.
                return f"CAST({self.column} AS DOUBLE)", _float_literal(value, key)
            return self.column, _number_literal(value, key)
        if self.column_type == "integer":
            # LanceDB refuses a float literal against an integer column (no implicit cast).
            return f"CAST({self.column} AS DOUBLE)", _float_literal(value, key)
        return self.column, _float_literal(value, key)

    def sql(self, operator: FilterOperator, value: Any, key: str) -> str:
        if operator in _COMPARISONS:
            _reject_list_value(operator, value, key)
            if value is None:
                raise UnsupportedFilterError(
                    f"filter on {key!r}: value None only works with 'is_empty'"
                )
            left, literal = self.value_sql(value, key)
            if operator == FilterOperator.NE:
                # A missing value (NULL) is "not equal", as in LlamaIndex's reference filters.
                return f"NOT {_coalesce(f'{left} = {literal}')}"
            return _coalesce(f"{left} {_COMPARISONS[operator]} {literal}")
        if operator in (FilterOperator.IN, FilterOperator.NIN):
            values = _as_list(operator, value, key)
            inside = self.in_sql(values, key)
            return inside if operator == FilterOperator.IN else f"NOT {inside}"
        if operator in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
            if self.column_type != "string" or not isinstance(value, str):
                raise UnsupportedFilterError(
                    f"filter on {key!r}: {operator.value!r} needs a text column and a string value"
                )
            if operator == FilterOperator.TEXT_MATCH:
                return _coalesce(f"strpos({self.column}, {quote_literal(value)}) > 0")
            return _coalesce(f"strpos(lower({self.column}), lower({quote_literal(value)})) > 0")
        if operator == FilterOperator.IS_EMPTY:
            if self.column_type == "string":
                return f"({self.column} IS NULL OR {self.column} = '')"
            return f"{self.column} IS NULL"
        raise UnsupportedFilterError(
            f"filter on {key!r}: operator {operator.value!r} is not supported on the page field "
            f"{self.column!r} (it holds one value, not a list); supported: ==, !=, >, >=, <, <=, "
            "in, nin, text_match, text_match_insensitive, is_empty"
        )

    def in_sql(self, values: list[Any], key: str) -> str:
        if not values:
            return "FALSE"
        pairs = [self.value_sql(value, key) for value in values]
        lefts = {left for left, _ in pairs}
        if len(lefts) == 1:
            left = lefts.pop()
            return _coalesce(f"{left} IN ({', '.join(literal for _, literal in pairs)})")
        # Mixed ints and floats against an integer column: compare each on its own terms.
        return _coalesce(" OR ".join(f"{left} = {literal}" for left, literal in pairs))


class _JsonLeaf:
    """One filter on a key of the JSON metadata column."""

    def __init__(self, json_column: str, key: str) -> None:
        self.json_column = json_column
        self.path = quote_literal(f'$["{key}"]')
        self.text = f"json_extract({json_column}, {self.path})"

    def is_string(self) -> str:
        return f"starts_with({self.text}, '\"')"

    def string_body(self) -> str:
        """The JSON text of a string value without its quote characters, for order and search."""
        return f"replace({self.text}, '\"', '')"

    @staticmethod
    def encode(value: str) -> str:
        # Lance's JSON text is compact serde_json output: the same as Python's json.dumps
        # with ensure_ascii=False (checked by the tests with arbitrary strings).
        return json.dumps(value, ensure_ascii=False)

    def equals(self, value: Any, key: str) -> str:
        if isinstance(value, str):
            return f"{self.text} = {quote_literal(self.encode(value))}"
        if isinstance(value, bool):
            return f"{self.text} = {quote_literal('true' if value else 'false')}"
        if _is_number(value):
            return f"TRY_CAST({self.text} AS DOUBLE) = {_float_literal(value, key)}"
        raise UnsupportedFilterError(
            f"filter on {key!r}: cannot compare with {type(value).__name__} value {value!r}"
        )

    def sql(self, operator: FilterOperator, value: Any, key: str) -> str:
        if operator in (FilterOperator.EQ, FilterOperator.NE):
            _reject_list_value(operator, value, key)
            if value is None:
                raise UnsupportedFilterError(
                    f"filter on {key!r}: value None only works with 'is_empty'"
                )
            equal = _coalesce(self.equals(value, key))
            return equal if operator == FilterOperator.EQ else f"NOT {equal}"
        if operator in _RANGE_OPERATORS:
            _reject_list_value(operator, value, key)
            symbol = _COMPARISONS[operator]
            if isinstance(value, str):
                body = self.encode(value)[1:-1].replace('"', "")
                return _coalesce(
                    f"{self.is_string()} AND {self.string_body()} {symbol} {quote_literal(body)}"
                )
            if _is_number(value):
                return _coalesce(
                    f"TRY_CAST({self.text} AS DOUBLE) {symbol} {_float_literal(value, key)}"
                )
            raise UnsupportedFilterError(
                f"filter on {key!r}: {operator.value!r} needs a number or a string, not {value!r}"
            )
        if operator in (FilterOperator.IN, FilterOperator.NIN):
            values = _as_list(operator, value, key)
            inside = self.in_sql(values, key)
            return inside if operator == FilterOperator.IN else f"NOT {inside}"
        if operator in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
            if not isinstance(value, str):
                raise UnsupportedFilterError(
                    f"filter on {key!r}: {operator.value!r} needs a string value, not {value!r}"
                )
            needle = quote_literal(self.encode(value)[1:-1].replace('"', ""))
            haystack = self.string_body()
            if operator == FilterOperator.TEXT_MATCH_INSENSITIVE:
                needle, haystack = f"lower({needle})", f"lower({haystack})"
            return _coalesce(f"{self.is_string()} AND strpos({haystack}, {needle}) > 0")
        if operator == FilterOperator.CONTAINS:
            _reject_list_value(operator, value, key)
            return self.contains(value, key)
        if operator in (FilterOperator.ANY, FilterOperator.ALL):
            values = _as_list(operator, value, key)
            if not values:
                # any([]) is false; all([]) holds for every array (and only arrays).
                if operator == FilterOperator.ANY:
                    return "FALSE"
                return _coalesce(f"starts_with({self.text}, '[')")
            joiner = " OR " if operator == FilterOperator.ANY else " AND "
            return "(" + joiner.join(self.contains(item, key) for item in values) + ")"
        if operator == FilterOperator.IS_EMPTY:
            # Missing, null, "" or [] -- as LlamaIndex's reference filter.
            return f"({self.text} IS NULL OR {self.text} IN ('null', '\"\"', '[]'))"
        raise UnsupportedFilterError(f"filter on {key!r}: unsupported operator {operator!r}")

    def in_sql(self, values: list[Any], key: str) -> str:
        if not values:
            return "FALSE"
        strings = [value for value in values if isinstance(value, str)]
        numbers = [value for value in values if _is_number(value)]
        others = [value for value in values if not isinstance(value, str) and not _is_number(value)]
        if others:
            raise UnsupportedFilterError(
                f"filter on {key!r}: 'in'/'nin' values must be strings or numbers, not {others!r}"
            )
        parts = []
        if strings:
            literals = ", ".join(quote_literal(self.encode(value)) for value in strings)
            parts.append(f"{self.text} IN ({literals})")
        if numbers:
            literals = ", ".join(_float_literal(value, key) for value in numbers)
            parts.append(f"TRY_CAST({self.text} AS DOUBLE) IN ({literals})")
        return _coalesce(" OR ".join(parts))

    def contains(self, value: Any, key: str) -> str:
        if isinstance(value, str):
            literal = quote_literal(value)
        elif _is_number(value):
            literal = _number_literal(value, key)
        else:
            raise UnsupportedFilterError(
                f"filter on {key!r}: 'contains' needs a string or number, not {value!r}"
            )
        return _coalesce(f"json_array_contains({self.json_column}, {self.path}, {literal})")
