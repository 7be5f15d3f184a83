"""The ``llama-index-vlm`` command line: index, search, ask, maps, info and delete.

::

    llama-index-vlm index reports/ --store ./vlm_index
    llama-index-vlm search "2023 revenue" -k 5 --filter page_number=3
    llama-index-vlm ask "What was the 2023 revenue?" --stream
    llama-index-vlm maps "revenue" --page report.pdf:3 --out revenue.png
    llama-index-vlm info
    llama-index-vlm delete report.pdf

- :mod:`~llama_index_vlm.cli.parser`: the arguments (standard library only, so ``--help`` is
  instant).
- :mod:`~llama_index_vlm.cli.commands`: what each command does, through the public API.

:func:`main` turns every mistake a user can make into one ``error: ...`` line on stderr and an
exit status (2 for usage errors, 1 for failures), never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from llama_index_vlm.cli.commands import COMMANDS
from llama_index_vlm.cli.parser import build_parser
from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidCheckpointError,
    ModelMismatchError,
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
    UnsupportedFilterError,
)


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


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
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    package_logger = logging.getLogger("llama_index_vlm")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except VLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
