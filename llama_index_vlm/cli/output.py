"""What the commands print for people: text from files and models made safe for a terminal.

File names, metadata, queries and answers come from outside: a file named with an ESC sequence
could recolour the terminal or move the cursor, a newline could fake a result line, and a bidi
override could show ``fdp.exe`` as ``exe.pdf``. Human-readable output shows such characters as
escapes (``\\x1b``, ``\\n``, ``\\u202e``); ``--json`` output stays exact (JSON escapes them itself).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index.core.schema import BaseNode

    from llama_index_vlm.store import StoredDocument

#: Characters shown as they are even though their category would be escaped: the joiners that
#: emoji and Indic scripts need, which move no text.
_HARMLESS_FORMAT = frozenset("\u200c\u200d")
#: Categories escaped: controls (C0, DEL, C1), format characters (bidi overrides and isolates,
#: invisible marks), line and paragraph separators, lone surrogates and unassigned private use.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
#: Python-like escapes for the controls people know by name.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escaped(text: object, keep: str = "") -> str:
    """``text`` with every character that could act on a terminal written as an escape.

    Args:
        text: anything; ``str(text)`` is escaped.
        keep: characters to leave as they are (``"\\n\\t"`` for an answer's own lines).

    A lone surrogate that stands for an undecodable byte of a file name (Python's
    ``surrogateescape``) is shown as that byte, ``\\xff``.

    Example:
        >>> escaped("report\\x1b[2J.pdf"), escaped("a\\nb", keep="\\n")
        ('report\\\\x1b[2J.pdf', 'a\\nb')
        >>> escaped("\\u202efdp.exe"), escaped("caf\\udce9.pdf"), escaped("naïve 📄")
        ('\\\\u202efdp.exe', 'caf\\\\xe9.pdf', 'naïve 📄')
    """
    text = str(text)
    if text.isprintable() and not keep:
        return text  # the common case, at C speed (isprintable is False for every escape)
    return "".join(character if character in keep else _escape(character) for character in text)


def _escape(character: str) -> str:
    if character in _HARMLESS_FORMAT:
        return character
    if unicodedata.category(character) not in _ESCAPED_CATEGORIES:
        return character
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte the file name held
        return f"\\x{code - 0xDC00:02x}"
    if character in _NAMED:
        return _NAMED[character]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shared_file_names(documents: Iterable[StoredDocument]) -> set[str]:
    """The file names that more than one stored document carries (``a/report.pdf`` and
    ``b/report.pdf``): results show those documents' paths instead.
    """
    seen: dict[str, str] = {}
    shared = set()
    for document in documents:
        if document.file_name is None:
            continue
        if seen.setdefault(document.file_name, document.doc_id) != document.doc_id:
            shared.add(document.file_name)
    return shared


def page_name(node: BaseNode, shared_names: set[str] = frozenset()) -> str:
    """A page as a result line names it, escaped: ``report.pdf, page 3``, or with the file's
    path when another document has the same file name.

    Example:
        >>> from llama_index.core.schema import TextNode
        >>> node = TextNode(metadata={"file_name": "r.pdf", "file_path": "/a/r.pdf",
        ...                           "page_number": 3})
        >>> page_name(node), page_name(node, {"r.pdf"})
        ('r.pdf, page 3', '/a/r.pdf, page 3')
    """
    from llama_index_vlm.pages import page_label

    metadata = node.metadata
    if metadata.get("file_name") in shared_names and metadata.get("file_path"):
        return escaped(f"{metadata['file_path']}, page {metadata.get('page_number', '?')}")
    return escaped(page_label(node))
