"""The ``llama-index-vlm`` command line: index, search, ask, maps, info, delete, serve and
compact.

::

    llama-index-vlm index reports/ --store ./vlm_index
    llama-index-vlm search "2023 revenue" -k 5 --filter page_number=3
    llama-index-vlm ask "What was the 2023 revenue?" --stream
    llama-index-vlm maps "revenue" --page report.pdf:3 --out revenue.png
    llama-index-vlm info
    llama-index-vlm delete report.pdf
    llama-index-vlm index reports/ --prune
    llama-index-vlm serve --store ./vlm_index

- :mod:`~llama_index_vlm.cli.parser`: the arguments (standard library only, so ``--help`` is
  instant).
- One module per command group, each running the public API: :mod:`~.indexing` (``index``),
  :mod:`~.querying` (``search``, ``ask``), :mod:`~.maps` (``maps``), :mod:`~.admin`
  (``info``, ``delete``) and :mod:`~.compaction` (``compact``), which never import torch or
  transformers, and :mod:`~.serve` (``serve``: the JSON API and web page of
  :mod:`llama_index_vlm.server`).
- :mod:`~.common` (opening the index, checking text, typing and checking ``--filter``),
  :mod:`~.models` (checking, placing and loading the models, with the command line's hints),
  :mod:`~.memory` (whether they fit), :mod:`~.copies` (files with the same bytes as a stored
  document) and :mod:`~.output` (file names, metadata and answers made safe for a terminal).

Every command checks what it was given (paths, checkpoints, filter keys, the memory the models
need) before it loads a model.

Results go to stdout; progress bars, warnings and errors to stderr. torch, transformers and
LanceDB are imported inside the commands that use them, so ``--help`` is fast.

:func:`main` turns every mistake a user can make into one ``error: ...`` line on stderr and an
exit status (2 for usage errors, 1 for failures), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llama_index_vlm.cli.admin import run_delete, run_info
from llama_index_vlm.cli.compaction import run_compact
from llama_index_vlm.cli.finetune import run_finetune, run_reindex
from llama_index_vlm.cli.indexing import run_index
from llama_index_vlm.cli.maps import run_maps
from llama_index_vlm.cli.output import escaped
from llama_index_vlm.cli.parser import build_parser
from llama_index_vlm.cli.querying import run_ask, run_search
from llama_index_vlm.cli.serve import run_serve
from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidCheckpointError,
    ModelMismatchError,
    TrainingDataError,
    UnsupportedFilterError,
    UsageError,
    VLMError,
)

__all__ = ["main"]

#: Errors that mean "the command line was wrong" (exit status 2); other VLMErrors and OSErrors
#: mean "the work failed" (exit status 1).
USAGE_ERRORS = (
    UsageError,
    ContextWindowExceededError,  # a query too long, or -k too many pages for the VLM
    EmptyInputError,
    InvalidCheckpointError,
    ModelMismatchError,
    TrainingDataError,  # a pairs or QA file that cannot be trained on
    UnsupportedFilterError,
)


#: What each command runs: a function of the parsed arguments that returns the exit status.
COMMANDS = {
    "index": run_index,
    "search": run_search,
    "ask": run_ask,
    "maps": run_maps,
    "info": run_info,
    "delete": run_delete,
    "serve": run_serve,
    "finetune": run_finetune,
    "reindex": run_reindex,
    "compact": run_compact,
}


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {escaped(record.getMessage())}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Example::

        from llama_index_vlm.cli import main
        status = main(["search", "2023 revenue", "--store", "./vlm_index"])
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, or argparse's usage error
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads sleep between parallel regions instead of spinning (read when torch is
    # first imported, after this): on a shared CPU spinning threads stall each other (exact
    # search ran 13x slower, issue 15); a one-shot command loses little by waking them.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with _logging_to_stderr(verbose=args.verbose), _library_warnings(verbose=args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; every error a user can cause becomes one line and a status."""
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's own flush at exit
        return status
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except USAGE_ERRORS as error:
        print(f"error: {escaped(error)}", file=sys.stderr)
        return 2
    except VLMError as error:
        print(f"error: {escaped(error)}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {escaped(f'{error.strerror or error}{where}')}", file=sys.stderr)
        return 1


def _stdout_closed() -> int:
    """``llama-index-vlm info | head``: the reader left; end quietly, as ``cat`` would.

    Python would otherwise report the broken pipe again when it flushes stdout at exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no file descriptor (captured in-process)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


@contextmanager
def _library_warnings(*, verbose: bool) -> Iterator[None]:
    """Other libraries' Python warnings off unless ``verbose``; ours are log records."""
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        yield


@contextmanager
def _logging_to_stderr(*, verbose: bool) -> Iterator[None]:
    """The package's log records as ``warning: ...`` lines on stderr while a command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    package_logger = logging.getLogger("llama_index_vlm")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
