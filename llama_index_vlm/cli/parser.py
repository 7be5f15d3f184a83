"""The command line's arguments: one argparse sub-parser per command.

Only the standard library is imported here, so ``llama-index-vlm --help`` answers at once; the
commands import torch, transformers and LanceDB when they run.
"""

from __future__ import annotations

import argparse
import re

from llama_index_vlm.cli import images
from llama_index_vlm.cli.finetune import add_finetune_parser, add_reindex_parser

# The same values as llama_index_vlm.encoder.DEFAULT_ENCODER and llama_index_vlm.vlm.DEFAULT_VLM
# (a test checks): written out here because importing those modules means importing torch.
DEFAULT_ENCODER = "vidore/colpali-v1.3-hf"
DEFAULT_VLM = "llava-hf/llava-1.5-7b-hf"
DEFAULT_STORE = "./vlm_index"
#: The weights' types ``--dtype`` takes; ``auto`` is resolved per device by cli.models.
DTYPES = ("auto", "bfloat16", "float16", "float32")

_DESCRIPTION = """\
RAG over document pages as images: index PDFs and images with a ColPali retriever into a
LanceDB store, then search them, ask a vision-language model about them, and see where on a
page a query matched."""

_EPILOG = """\
examples:
  llama-index-vlm index reports/ --store ./vlm_index
  llama-index-vlm search "2023 revenue" --filter page_number=3
  llama-index-vlm ask "What was the 2023 revenue?" --stream
  llama-index-vlm maps "revenue" --page report.pdf:3 --out revenue.png
  llama-index-vlm info
  llama-index-vlm delete report.pdf
  llama-index-vlm index reports/ --prune     # also drop files deleted from reports/
  llama-index-vlm compact
  llama-index-vlm index photos/ --images-only
  llama-index-vlm search "a red bicycle" --image-search
  llama-index-vlm finetune retriever --pairs pairs.jsonl --out ./my-adapter

Models are hub ids or local directories. Querying commands use the retriever the index was
built with (recorded in the store) unless --model names another copy of it. Offline, pass
local checkpoint directories (set HF_HUB_OFFLINE=1 to skip network timeouts).

exit status: 0 success, 1 a failure (a file that could not be indexed, an I/O error),
2 a usage error (bad arguments, no index, a model that cannot be loaded or does not match)."""


def _int_at_least(text: str, minimum: int, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {requirement}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _int_at_least(text, 0, "0 or more")


def pool_factor(text: str) -> float:
    """argparse type: a token pool factor, a number of at least 1 (checked again by ingest)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least 1 (1: no pooling), not {text}")
    return value


def ray_address(text: str) -> str:
    """argparse type: ``local``, ``auto``, ``ray://HOST:PORT`` or ``HOST:PORT`` (a Ray cluster).

    Refusing anything else catches ``index --ray reports/``, where argparse takes the folder
    for the address.
    """
    if text in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.-]+:\d+", text):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a Ray address (local, auto, ray://HOST:PORT or HOST:PORT); "
        "put --ray after the paths to index"
    )


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def filter_pair(text: str) -> tuple[str, str]:
    """argparse type: ``key=value`` -> ``(key, value)``; the value is typed later, per key."""
    key, separator, value = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not key=value (e.g. page_number=3 or file_name=report.pdf)"
        )
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The ``llama-index-vlm`` parser; each sub-command sets ``command`` in the parsed args."""
    parser = _main_parser()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_index(commands)
    _add_ask(commands)
    _add_search(commands)
    _add_maps(commands)
    _add_info(commands)
    _add_delete(commands)
    from llama_index_vlm.cli.serve import add_serve_parser  # its own module; imports this one

    add_serve_parser(commands, _store_options())
    add_finetune_parser(commands)
    add_reindex_parser(commands)
    _add_compact(commands)
    return parser


def _main_parser() -> argparse.ArgumentParser:
    from llama_index_vlm import __version__

    parser = argparse.ArgumentParser(
        prog="llama-index-vlm",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


# ------------------------------------------------------------------ options shared by commands


def _store_options() -> argparse.ArgumentParser:
    """``--store`` and ``--verbose``: every command has them."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="DIR",
        help=f"the index: a directory or LanceDB URI (default: {DEFAULT_STORE})",
    )
    options.add_argument(
        "-v", "--verbose", action="store_true", help="show info logs and library warnings"
    )
    return options


def _encoder_options(new_store_default: bool) -> argparse.ArgumentParser:
    """``--model``, ``--device`` and ``--dtype``: the commands that run the retriever model."""
    options = argparse.ArgumentParser(add_help=False)
    default = (
        f"the index's own model, or {DEFAULT_ENCODER} for a new index"
        if new_store_default
        else "the model the index was built with"
    )
    options.add_argument(
        "--model",
        metavar="CKPT",
        help=f"ColPali/ColQwen2 retriever: hub id or local directory (default: {default})",
    )
    options.add_argument(
        "--adapter",
        metavar="DIR",
        help="a LoRA adapter from `finetune retriever` on the retriever (default: the index's "
        "own, if it was built with one)",
    )
    options.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:1... (default: auto)",
    )
    options.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights' type for every model the command loads; auto: bfloat16 on a GPU or a "
        "CPU (half the memory of float32), float16 on Apple's mps (default: auto)",
    )
    return options


def _filter_options() -> argparse.ArgumentParser:
    """``--filter KEY=VALUE``: the commands that retrieve pages."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--filter",
        dest="filters",
        action="append",
        type=filter_pair,
        default=[],
        metavar="KEY=VALUE",
        help="only pages whose metadata KEY equals VALUE (repeat to require several); page "
        "fields (page_number, file_name, doc_id, ...) or your own metadata keys",
    )
    options.add_argument(
        "--hybrid",
        action="store_true",
        help="rank pages by image (MaxSim) and by their text layer (BM25, for exact part "
        "numbers and names) fused; needs pages indexed with `index --text`",
    )
    return options


# ------------------------------------------------------------------ one function per command


def _add_index(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "index",
        parents=[_store_options(), _encoder_options(new_store_default=True)],
        help="read, embed and store PDFs and images",
        description="Read PDFs and images (folders recursively), embed every page and store it. "
        "Pages already stored unchanged are skipped, so running it again is cheap and finishes "
        "an interrupted run. Exits with 1 when any file could not be indexed.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to index")
    index.add_argument(
        "--dpi", type=positive_int, default=144, help="PDF render resolution (default: 144)"
    )
    index.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="pages per commit and per encoder call (default: 16)",
    )
    index.add_argument(
        "--pool-factor",
        type=pool_factor,
        metavar="F",
        help="store 1/F of each page's vectors, merged by Ward token pooling (3 keeps most of "
        "the retrieval quality); default: the index's own, or 1 (no pooling) for a new index",
    )
    index.add_argument(
        "--text",
        action="store_true",
        help="also store each PDF page's text layer, for `search --hybrid` and `ask --hybrid`",
    )
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.add_argument(
        "--ray",
        nargs="?",
        const="local",
        type=ray_address,
        metavar="ADDRESS",
        help="render and encode on Ray: 'auto' (a cluster running here), 'ray://HOST:10001' "
        "or HOST:PORT; 'local' (the default) uses RAY_ADDRESS or a running local cluster, or "
        "starts one",
    )
    index.add_argument(
        "--prune",
        action="store_true",
        help="also delete from the index the documents under PATH... whose files no longer "
        "exist (a missing file is only reported without it)",
    )
    images.add_index_options(index)
    _add_reader_limits(index)


def _add_reader_limits(index: argparse.ArgumentParser) -> None:
    """What one file may cost (PDFPageReader's limits), and whether links are followed."""
    limits = index.add_argument_group("limits per file")
    limits.add_argument(
        "--render-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="stop a file whose opening or any one page takes longer (default: 30)",
    )
    limits.add_argument(
        "--render-memory-limit",
        type=positive_int,
        default=2048,
        metavar="MIB",
        help="memory of the process rendering a file, in MiB (default: 2048)",
    )
    limits.add_argument(
        "--max-pages",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="refuse a file with more pages than this (default: 10000)",
    )
    limits.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links inside a folder that point outside it (default: skip them)",
    )


def _add_ask(commands: argparse._SubParsersAction) -> None:
    ask = commands.add_parser(
        "ask",
        parents=[_store_options(), _encoder_options(new_store_default=False), _filter_options()],
        help="answer a question from the indexed pages",
        description="Retrieve the pages that best match a question and have a vision-language "
        "model answer from their images; prints the answer and the pages it was given.",
    )
    ask.add_argument("question", help="the question, in words")
    ask.add_argument(
        "--vlm",
        default=DEFAULT_VLM,
        metavar="CKPT",
        help="Qwen2-VL/2.5-VL/3-VL, SmolVLM, Idefics3, Gemma 3, LLaVA(-NeXT/-OneVision), "
        f"PaliGemma or BLIP-2: hub id or local directory (default: {DEFAULT_VLM})",
    )
    add_quantization_option(ask)
    ask.add_argument(
        "-k", type=positive_int, default=3, help="pages given to the model (default: 3)"
    )
    output = ask.add_mutually_exclusive_group()
    output.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    output.add_argument(
        "--json", action="store_true", help="print the answer and its pages as JSON"
    )
    ask.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=256,
        metavar="N",
        help="longest answer in tokens (default: 256)",
    )
    ask.add_argument(
        "--vlm-adapter", metavar="DIR", help="a LoRA adapter from `finetune answerer` on --vlm"
    )
    images.add_ask_options(ask)


def add_quantization_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--quantization``: the commands that load an answering model."""
    parser.add_argument(
        "--quantization",
        choices=("4bit", "8bit", "int8"),
        default=None,
        help="load the answering model's weights quantised: 4bit or 8bit (bitsandbytes, CUDA "
        "GPUs) or int8 (torchao, CPUs and GPUs); needs pip install "
        "'llama-index-vlm[quantization]'",
    )


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        parents=[_store_options(), _encoder_options(new_store_default=False), _filter_options()],
        help="rank pages by a query, without a language model",
        description="Rank the indexed pages by late-interaction (MaxSim) score against a query. "
        "Prints each page's page id, which `maps --page` takes.",
    )
    search.add_argument(
        "query", nargs="?", default="", help="the query, in words (none with --image)"
    )
    search.add_argument("-k", type=positive_int, default=5, help="pages to list (default: 5)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    images.add_search_options(search)


def _add_maps(commands: argparse._SubParsersAction) -> None:
    maps = commands.add_parser(
        "maps",
        parents=[_store_options(), _encoder_options(new_store_default=False)],
        help="draw where on a page each query token matched",
        description="Draw similarity maps of a query over a stored page: one heatmap panel per "
        "query token, or one token over the full page with its hottest region outlined.",
    )
    maps.add_argument("query", help="the query, in words")
    maps.add_argument(
        "--page",
        required=True,
        metavar="PAGE",
        help="a page id (as `search` prints) or FILE_NAME:PAGE_NUMBER, e.g. report.pdf:3",
    )
    maps.add_argument("--out", required=True, metavar="FILE.png", help="image file to write")
    maps.add_argument(
        "--token",
        type=non_negative_int,
        metavar="N",
        help="draw only query token N (the numbers are printed with each map)",
    )
    maps.add_argument(
        "--all-tokens",
        action="store_true",
        help="also draw the special tokens the model appends to a query (padding)",
    )


def _add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser(
        "info",
        parents=[_store_options()],
        help="describe an index",
        description="Pages, documents, the retriever model's fingerprint, disk size and table "
        "version of an index, and its documents with their ids.",
    )
    info.add_argument("--json", action="store_true", help="print the description as JSON")


def _add_delete(commands: argparse._SubParsersAction) -> None:
    delete = commands.add_parser(
        "delete",
        parents=[_store_options()],
        help="delete a document's pages",
        description="Delete every page of one document, named by its doc id (as `info` prints), "
        "a unique beginning of it, or its file name or path. Lists what it will delete and, on "
        "a terminal, asks first.",
    )
    delete.add_argument(
        "document", metavar="DOC_ID", help="doc id (or its unique beginning), file name or path"
    )
    delete.add_argument("-y", "--yes", action="store_true", help="delete without asking")


def _add_compact(commands: argparse._SubParsersAction) -> None:
    compact = commands.add_parser(
        "compact",
        parents=[_store_options()],
        help="give the disk space of deleted pages back",
        description="Rewrite the index's files without deleted and replaced pages, and remove "
        "old versions, printing the space reclaimed. Safe while queries run: a version stays "
        "readable for --grace minutes after a newer one replaced it.",
    )
    compact.add_argument(
        "--grace",
        type=_non_negative_minutes,
        default=10.0,
        metavar="MINUTES",
        help="keep versions replaced less than this long ago (default: 10); 0 frees all the "
        "space now, when nothing else uses the index",
    )
    compact.add_argument("--json", action="store_true", help="print the report as JSON")


def _non_negative_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value
