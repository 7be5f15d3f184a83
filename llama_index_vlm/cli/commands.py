"""What each command does: open the index and the models, run the library, print the results.

Results go to stdout; progress bars, warnings and errors to stderr. torch, transformers and
LanceDB are imported inside the functions, so importing this module (and ``--help``) is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.parser import DEFAULT_STORE
from llama_index_vlm.errors import (
    EmptyInputError,
    InvalidCheckpointError,
    ModelMismatchError,
    UsageError,
)
from llama_index_vlm.pages import page_label

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import MetadataFilters

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.store import LanceDBPageStore, StoredDocument
    from llama_index_vlm.vlm import HuggingFaceVLM

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class DocumentSummary:
    """One indexed document, as ``info`` lists it."""

    doc_id: str
    file_name: str | None
    file_path: str | None
    pages: int


# ------------------------------------------------------------------------------ commands


def run_index(args: argparse.Namespace) -> int:
    """``index PATH...``: ingest files and folders; 1 when any file failed."""
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader

    store = open_store(args.store, must_exist=False)
    encoder = load_encoder(args.model, store, args.device)
    report = ingest(
        args.paths,
        encoder,
        store,
        reader=PDFPageReader(dpi=args.dpi),
        batch_size=args.batch_size,
        pool_factor=args.pool_factor,
        show_progress=not args.no_progress,
    )
    print(report.summary())
    for failed in report.failed:
        print(f"  not indexed: {failed.path}: {failed.reason}")
    documents = len(store.doc_ids())
    print(f"index {args.store}: {_count(store.count(), 'page')}, {_count(documents, 'document')}")
    return 0 if report.ok else 1


def run_search(args: argparse.Namespace) -> int:
    """``search QUERY``: the best pages by MaxSim score, without a language model."""
    query = require_text(args.query, "query")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters)
    if not require_pages(store, filters):
        print("[]" if args.json else "no pages match the filters")
        return 0
    encoder = load_encoder(args.model, store, args.device)
    from llama_index_vlm.retriever import ColPaliRetriever  # after the checks, as in maps

    retriever = ColPaliRetriever(
        encoder=encoder, store=store, similarity_top_k=args.k, filters=filters
    )
    hits = retriever.retrieve(query)
    if args.json:
        results = [
            {"rank": rank, "score": hit.score, **_page_fields(hit.node)}
            for rank, hit in enumerate(hits, start=1)
        ]
        print(json.dumps(results, indent=2))
        return 0
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. {page_label(hit.node)}  score {hit.score:.2f}  page_id {hit.node.node_id}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    """``ask QUESTION``: retrieve pages, have the VLM answer, print the answer and its pages."""
    question = require_text(args.question, "question")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters)
    if not require_pages(store, filters):
        raise UsageError("no pages match the filters; nothing to answer from")
    encoder = load_encoder(args.model, store, args.device)
    vlm = load_vlm(args.vlm, args.device, args.max_new_tokens)
    from llama_index_vlm.index import VisualDocumentIndex, cited_pages

    index = VisualDocumentIndex.from_store(store, encoder)
    engine = index.as_query_engine(
        llm=vlm, similarity_top_k=args.k, streaming=args.stream, filters=filters
    )
    response = engine.query(question)
    if args.stream:
        for text in response.response_gen:
            print(text, end="", flush=True)
        print()
    else:
        print(str(response))
    print("\nCited pages:")
    for rank, page in enumerate(cited_pages(response), start=1):
        print(f"  {rank}. {page}")
    return 0


def run_maps(args: argparse.Namespace) -> int:
    """``maps QUERY --page PAGE --out FILE``: similarity maps of a query over a stored page."""
    query = require_text(args.query, "query")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {args.out}: there is no folder {folder}")
    store = open_store(args.store, must_exist=True)
    page = find_page(store, args.page)
    encoder = load_encoder(args.model, store, args.device)
    # Imported once the arguments are checked, so a mistake is reported at once.
    from llama_index_vlm.interpretability import (
        draw_region,
        hottest_region,
        overlay_heatmap,
        similarity_map_panels,
        similarity_maps,
    )
    from llama_index_vlm.pages import page_image

    image = page_image(page)
    (query_vectors,) = encoder.embed_queries([query], show_progress=False)
    maps = similarity_maps(query_vectors, encoder.embed_image_patches(image))
    tokens = encoder.query_token_labels(query)
    if len(tokens) != len(maps):  # never seen; numbered panels beat a crash
        tokens = [f"#{position}" for position in range(len(maps))]
    names = [_token_text(encoder, token) for token in tokens]
    if args.token is not None:
        if args.token >= len(maps):
            listing = ", ".join(f"{position} {name}" for position, name in enumerate(names))
            raise UsageError(
                f"--token {args.token}: the query has {len(maps)} tokens, numbered 0 to "
                f"{len(maps) - 1}: {listing}"
            )
        chosen = [args.token]
        region = hottest_region(maps[args.token], image.size)
        picture = draw_region(overlay_heatmap(image, maps[args.token]), region)
    else:
        special = set(encoder.processor.tokenizer.all_special_tokens)
        chosen = [
            position
            for position, token in enumerate(tokens)
            if args.all_tokens or token not in special
        ] or list(range(len(maps)))
        region = None
        picture = similarity_map_panels(
            image, maps[chosen], [f"{position}: {names[position]}" for position in chosen]
        )
    save_image(picture, args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height}): {query!r} on {page_label(page)}")
    for position in chosen:
        print(
            f"  token {position:>2} {names[position]:<16} max similarity {maps[position].max():.3f}"
        )
    if region is not None:
        print(f"  hottest region (left, top, right, bottom): {region}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``info``: pages, documents, model fingerprint, disk size and version of an index."""
    store = open_store(args.store, must_exist=True)
    documents = list_documents(store)
    fingerprint = store.fingerprint or {}
    disk_bytes = disk_size(args.store)
    description = {
        "store": args.store,
        "pages": store.count(),
        "fingerprint": fingerprint,
        "disk_bytes": disk_bytes,
        "version": store.version,
        "documents": [asdict(document) for document in documents],
    }
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    model = fingerprint.get("model", "unknown")
    details = ", ".join(
        part
        for part in (
            fingerprint.get("model_class"),
            f"{fingerprint['embedding_dim']}-dim vectors" if "embedding_dim" in fingerprint else "",
            f"weights digest {fingerprint['weights_digest']}"
            if "weights_digest" in fingerprint
            else "",
            f"pool factor {store.pool_factor:g}" if store.pool_factor > 1 else "",
        )
        if part
    )
    print(f"index      {args.store}")
    print(f"pages      {description['pages']}")
    print(f"documents  {len(documents)}")
    print(f"model      {model}" + (f" ({details})" if details else ""))
    print(f"disk size  {'unknown (remote)' if disk_bytes is None else _human_size(disk_bytes)}")
    print(f"version    {store.version}")
    if documents:
        print(f"\n{'doc id':<64}  {'pages':>5}  file")
        for document in documents:
            where = document.file_path or document.file_name or ""
            print(f"{document.doc_id:<64}  {document.pages:>5}  {where}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """``delete DOC_ID``: delete every page of one document."""
    store = open_store(args.store, must_exist=True)
    document = find_document(store, args.document)
    store.delete(document.doc_id)
    name = document.file_path or document.file_name or document.doc_id
    print(
        f"deleted {_count(document.pages, 'page')} of {name} (doc id {document.doc_id}); "
        f"{_count(store.count(), 'page')} left"
    )
    return 0


COMMANDS = {
    "index": run_index,
    "search": run_search,
    "ask": run_ask,
    "maps": run_maps,
    "info": run_info,
    "delete": run_delete,
}


# ------------------------------------------------------------------- opening things


def open_store(uri: str, *, must_exist: bool) -> LanceDBPageStore:
    """Open the page store at ``uri``; with ``must_exist``, refuse a missing or empty one.

    Checked before connecting, because connecting to LanceDB creates the directory.
    """
    local = "://" not in uri
    if local and os.path.exists(uri) and not os.path.isdir(uri):
        raise UsageError(f"{uri} is a file, not an index directory; choose another --store")
    if must_exist and local and not os.path.isdir(uri):
        raise UsageError(_no_index_message(uri))
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=uri)
    if must_exist and store.schema is None:
        raise UsageError(_no_index_message(uri))
    return store


def require_pages(store: LanceDBPageStore, filters: MetadataFilters | None) -> int:
    """The number of pages (matching ``filters``); an empty index is a usage error.

    Counting first checks the filters against the store before any model is loaded.
    """
    if store.count() == 0:
        raise UsageError(
            f"the index at {store.uri} holds no pages; run "
            f"`llama-index-vlm index PATH{_store_option(store.uri)}` first"
        )
    return store.count(filters)


def load_encoder(model: str | None, store: LanceDBPageStore, device: str) -> ColPaliEncoder:
    """Load the retriever model and check it matches the vectors already in ``store``.

    Without ``model``, the model recorded in the store's fingerprint is used (so querying needs
    no --model), or the default checkpoint for a new store.
    """
    from llama_index_vlm.encoder import DEFAULT_ENCODER, ColPaliEncoder

    check_device(device)
    recorded = (store.fingerprint or {}).get("model")
    name = model or recorded or DEFAULT_ENCODER
    try:
        encoder = ColPaliEncoder.from_pretrained(
            _resolve_local(name), device=device, show_progress=False
        )
    except InvalidCheckpointError as error:
        if model is None and recorded:
            raise InvalidCheckpointError(
                f"the index's model: {error} (the index was built with {recorded!r}; pass "
                "--model with that checkpoint's hub id or a local copy of it)"
            ) from error
        raise InvalidCheckpointError(f"--model: {error}") from error
    try:
        store.check_fingerprint(encoder.fingerprint, encoder.embedding_dim)
    except ModelMismatchError as error:
        # The library's message spells out both fingerprints; people need the two models.
        stored = store.fingerprint or {}
        raise ModelMismatchError(
            f"the index at {store.uri} was built with {_describe_model(stored)}, not "
            f"{_describe_model(encoder.fingerprint)}: their vectors cannot be compared; "
            + ("leave out --model to use the index's own model, or " if model is not None else "")
            + "index with the new model into another --store"
        ) from error
    return encoder


def load_vlm(name: str, device: str, max_new_tokens: int) -> HuggingFaceVLM:
    """Load the answering model, with the CLI's hint when it cannot be loaded."""
    from llama_index_vlm.vlm import HuggingFaceVLM

    check_device(device)
    try:
        return HuggingFaceVLM.from_pretrained(
            _resolve_local(name), device=device, max_new_tokens=max_new_tokens
        )
    except InvalidCheckpointError as error:
        raise InvalidCheckpointError(f"--vlm: {error}") from error


def check_device(device: str) -> None:
    """Refuse a device name torch does not know, or one this machine lacks."""
    if device == "auto":
        return
    import torch

    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(
            f"--device {device!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")


def require_text(text: str, what: str) -> str:
    """``text`` unless it is empty or only whitespace (checked before loading any model)."""
    if not text.strip():
        raise EmptyInputError(f"the {what} is empty; write it in words")
    return text


# ------------------------------------------------------------------- filters, pages, documents


def metadata_filters(pairs: list[tuple[str, str]]) -> MetadataFilters | None:
    """``--filter key=value`` pairs as LlamaIndex ``MetadataFilters`` (equality, all must hold)."""
    if not pairs:
        return None
    from llama_index.core.vector_stores.types import (
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )

    return MetadataFilters(
        filters=[
            MetadataFilter(key=key, value=filter_value(key, raw), operator=FilterOperator.EQ)
            for key, raw in pairs
        ]
    )


def filter_value(key: str, raw: str) -> str | int | float:
    """Type a ``--filter`` value: by the column's type for page fields, else by its look.

    Page fields keep their own type (``page_number=3`` is the integer 3, ``file_name=2023.pdf``
    text). Other metadata values are integers or decimals when they read as one, otherwise
    text; quotes force text (``year="2023"``).
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


def find_page(store: LanceDBPageStore, page: str) -> BaseNode:
    """The stored page named by a page id or by ``FILE:PAGE_NUMBER`` (file name or path)."""
    from llama_index.core.vector_stores.types import MetadataFilters

    nodes = store.get_nodes([page])
    if nodes:
        return nodes[0]
    file, separator, number = page.rpartition(":")
    if separator and file and number.isdigit():
        key, value = ("file_path", os.path.abspath(file)) if os.sep in file else ("file_name", file)
        filters = MetadataFilters.from_dicts(
            [{"key": key, "value": value}, {"key": "page_number", "value": int(number)}]
        )
        nodes = store.get_nodes(filters=filters)
        if len(nodes) == 1:
            return nodes[0]
        if len(nodes) > 1:
            ids = ", ".join(node.node_id for node in nodes)
            raise UsageError(f"{len(nodes)} documents have a page {page}; give its page id: {ids}")
    raise UsageError(
        f"no page {page!r} in the index at {store.uri}; give a page id as "
        "`llama-index-vlm search` prints it, or FILE_NAME:PAGE_NUMBER (e.g. report.pdf:3)"
    )


def list_documents(store: LanceDBPageStore) -> list[StoredDocument]:
    """Every stored document with its page count, by file path."""
    return store.documents()


def find_document(store: LanceDBPageStore, name: str) -> DocumentSummary:
    """The stored document named by its doc id, its file path or (if unique) its file name."""
    documents = list_documents(store)
    for document in documents:
        if document.doc_id == name:
            return document
    path = os.path.abspath(name)
    matches = [document for document in documents if document.file_path == path]
    matches = matches or [document for document in documents if document.file_name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listing = "; ".join(f"{d.doc_id} ({d.file_path})" for d in matches)
        raise UsageError(f"{len(matches)} documents are named {name!r}; give a doc id: {listing}")
    raise UsageError(
        f"no document {name!r} in the index at {store.uri}; `llama-index-vlm info"
        f"{_store_option(store.uri)}` lists the doc ids"
    )


# ------------------------------------------------------------------- output


def save_image(image: Any, path: str) -> None:
    """Save a PIL image, its format taken from the file's extension."""
    try:
        image.save(path)
    except (ValueError, KeyError):
        # Pillow raises ValueError for an unknown extension, KeyError for a known but unwritable
        # one; nothing is written in either case.
        raise UsageError(
            f"cannot tell an image format from {path!r}; name the file .png (or .jpg, .webp)"
        ) from None


def disk_size(uri: str) -> int | None:
    """Bytes under a local index directory; None for a remote URI."""
    if "://" in uri:
        return None
    total = 0
    for folder, _, files in os.walk(uri):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue  # removed meanwhile by a concurrent cleanup
    return total


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _page_fields(node: BaseNode) -> dict[str, Any]:
    keys = ("doc_id", "file_name", "file_path", "page_number")
    return {"page_id": node.node_id, **{key: node.metadata.get(key) for key in keys}}


def _token_text(encoder: ColPaliEncoder, token: str) -> str:
    """A token as people read it (``Ġrevenue`` -> ``revenue``); whitespace tokens quoted."""
    try:
        text = encoder.processor.tokenizer.convert_tokens_to_string([token]).strip()
    except Exception:  # noqa: BLE001 - a label is cosmetic; fall back to the raw token
        text = token
    return text if text else repr(token)


def _describe_model(fingerprint: dict[str, Any]) -> str:
    name = fingerprint.get("model") or "an unknown model"
    details = [
        str(fingerprint[key]) for key in ("model_class", "weights_digest") if key in fingerprint
    ]
    return f"{name} ({', '.join(details)})" if details else str(name)


def _resolve_local(name: str) -> str:
    # A local directory is recorded by its absolute path in the store's fingerprint, so later
    # commands find it again from any working directory.
    return os.path.abspath(name) if os.path.isdir(name) else name


def _store_option(uri: str) -> str:
    return "" if uri == DEFAULT_STORE else f" --store {shlex.quote(uri)}"


def _no_index_message(uri: str) -> str:
    return f"no index at {uri}; run `llama-index-vlm index PATH{_store_option(uri)}` first"
