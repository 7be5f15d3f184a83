"""What the commands share: opening the index, checking the words given, typing ``--filter``.

Nothing here imports torch or transformers, and LanceDB and LlamaIndex only inside the
functions that need them, so ``--help`` stays instant and ``info``/``delete`` stay light.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from typing import TYPE_CHECKING

from llama_index_vlm.cli.output import escaped
from llama_index_vlm.cli.parser import DEFAULT_STORE
from llama_index_vlm.errors import EmptyInputError, StoreError, UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index.core.vector_stores.types import MetadataFilters

    from llama_index_vlm.store import LanceDBPageStore, StoredDocument

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


# ------------------------------------------------------------------------------ the index


def open_store(uri: str, *, must_exist: bool) -> LanceDBPageStore:
    """Open the page store at ``uri``; with ``must_exist``, refuse a missing or empty one.

    Checked before connecting, because connecting to LanceDB creates the directory. A store
    that cannot be opened (an unreachable bucket, a path that is not UTF-8) is one line.
    """
    shown = escaped(uri)
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"--store {shown}: the path is not valid UTF-8, which LanceDB cannot open; "
            "rename the folder or choose another --store"
        ) from None
    local = "://" not in uri
    if local and os.path.exists(uri) and not os.path.isdir(uri):
        raise UsageError(f"{shown} is a file, not an index directory; choose another --store")
    if must_exist and local and not os.path.isdir(uri):
        raise UsageError(no_index_message(uri))
    from llama_index_vlm.store import LanceDBPageStore

    try:
        store = LanceDBPageStore(uri=uri)
    except StoreError:
        raise  # the store's own one line (an unreachable or refusing object store)
    except (OSError, RuntimeError) as error:
        # LanceDB reports an unreachable bucket or a refused connection as a RuntimeError
        # ("lance error: ..."); the first line of it says which.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StoreError(f"cannot open the index at {shown}: {escaped(reason)}") from None
    if must_exist and store.schema is None:
        raise UsageError(no_index_message(uri))
    return store


def is_complete(document: StoredDocument) -> bool:
    """Whether every page of ``document`` is stored (an interrupted or failed run leaves some
    out); a document that does not say how many pages it has counts as complete.
    """
    return document.page_count is None or document.pages >= document.page_count


def require_pages(store: LanceDBPageStore, filters: MetadataFilters | None) -> int:
    """The number of pages (matching ``filters``); an empty index is a usage error.

    Counting first checks the filters against the store before any model is loaded.
    """
    if store.count() == 0:
        raise UsageError(
            f"the index at {escaped(store.uri)} holds no pages; run "
            f"`llama-index-vlm index PATH{store_option(store.uri)}` first"
        )
    return store.count(filters)


def no_index_message(uri: str) -> str:
    """What to do when there is no index at ``uri``."""
    return f"no index at {escaped(uri)}; run `llama-index-vlm index PATH{store_option(uri)}` first"


def store_option(uri: str) -> str:
    """The ``--store`` option that names ``uri`` in a suggested command (none for the default).

    Example:
        >>> store_option("./vlm_index"), store_option("my index")
        ('', " --store 'my index'")
    """
    return "" if uri == DEFAULT_STORE else f" --store {escaped(shlex.quote(uri))}"


# ------------------------------------------------------------------------------ words given


def require_text(text: str, what: str) -> str:
    """``text`` unless it is empty or only whitespace (checked before loading any model)."""
    if not text.strip():
        raise EmptyInputError(f"the {what} is empty; write it in words")
    return text


def quantity(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless one.

    Example:
        >>> quantity(1, "page"), quantity(3, "page")
        ('1 page', '3 pages')
    """
    return f"{number} {noun}{'' if number == 1 else 's'}"


# ------------------------------------------------------------------------------ --filter


def metadata_filters(
    pairs: list[tuple[str, str]], store: LanceDBPageStore | None = None
) -> MetadataFilters | None:
    """``--filter key=value`` pairs as LlamaIndex ``MetadataFilters`` (equality, all must hold).

    With ``store``, each key must be a page field or a metadata key present in it: a typo such
    as ``page_nubmer`` is an error with a suggestion, not a filter that silently matches nothing.
    """
    if not pairs:
        return None
    if store is not None:
        check_filter_keys([key for key, _ in pairs], store)
    from llama_index.core.vector_stores.types import (
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )

    conditions: list[MetadataFilter | MetadataFilters] = []
    for key, raw in pairs:
        condition = MetadataFilter(
            key=key, value=filter_value(key, raw), operator=FilterOperator.EQ
        )
        copies = _copies_named(store, key, raw)
        if copies:  # a copy's name finds its document too
            also = MetadataFilter(key="doc_id", value=copies, operator=FilterOperator.IN)
            conditions.append(MetadataFilters(filters=[condition, also], condition="or"))
        else:
            conditions.append(condition)
    return MetadataFilters(filters=conditions)


def _copies_named(store: LanceDBPageStore | None, key: str, value: str) -> list[str]:
    """The documents with a recorded copy named ``value``, for a file name or path filter."""
    if store is None or key not in ("file_name", "file_path"):
        return []
    from llama_index_vlm.cli.copies import FileCopies

    return FileCopies(store).documents_named(value)


def check_filter_keys(keys: list[str], store: LanceDBPageStore) -> None:
    """Refuse a filter key that is neither a page field nor a metadata key of ``store``'s pages.

    Raises:
        UsageError: naming the key, the closest known keys, and where the list comes from.
    """
    from llama_index_vlm.pages import PAGE_FIELD_ALIASES, PAGE_FIELDS

    fields = [*PAGE_FIELDS, *PAGE_FIELD_ALIASES]
    unknown = [key for key in dict.fromkeys(keys) if key not in fields]
    if not unknown:
        return
    own = store.metadata_keys()
    for key in unknown:
        if key not in own:
            raise UsageError(_unknown_key_message(key, fields, own))


def _unknown_key_message(key: str, fields: list[str], own: list[str]) -> str:
    from llama_index_vlm.pages import PAGE_FIELDS

    close = difflib.get_close_matches(key, [*fields, *own], n=3, cutoff=0.6)
    suggestion = f"did you mean {' or '.join(close)}? " if close else ""
    known = f"; metadata keys in this index: {', '.join(map(escaped, own))}" if own else ""
    return (
        f"--filter {escaped(key)}=...: no page has a metadata key {key!r}; "
        f"{suggestion}page fields: {', '.join(PAGE_FIELDS)}{known}"
    )


def filter_value(key: str, raw: str) -> str | int | float:
    """Type a ``--filter`` value: by the column's type for page fields, else by its look.

    Page fields keep their own type (``page_number=3`` is the integer 3, ``file_name=2023.pdf``
    text). Other metadata values are integers or decimals when they read as one, otherwise
    text; quotes force text (``year="2023"``).

    Example:
        >>> filter_value("page_number", "3"), filter_value("doc_id", "123")
        (3, '123')
        >>> filter_value("year", "2023"), filter_value("year", '"2023"')
        (2023, '2023')
    """
    from llama_index_vlm.pages import PAGE_FIELD_ALIASES, PAGE_FIELDS

    kind = PAGE_FIELDS.get(PAGE_FIELD_ALIASES.get(key, key))
    if kind == "string":
        return raw
    if kind is not None:
        number = raw.strip()
        if kind == "integer" and _INTEGER.fullmatch(number):
            return int(number)
        if _DECIMAL.fullmatch(number):
            return float(number)
        raise UsageError(f"--filter {key}={raw}: {key} holds numbers, and {raw!r} is not one")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if _INTEGER.fullmatch(raw):
        return int(raw)
    if _DECIMAL.fullmatch(raw):
        return float(raw)
    return raw
