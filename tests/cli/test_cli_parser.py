"""The command line's arguments (llama_index_vlm.cli.parser)."""

from __future__ import annotations

import pytest
from cli_runner import run_cli

from llama_index_vlm.cli.parser import DEFAULT_ENCODER, DEFAULT_STORE, DEFAULT_VLM, build_parser

COMMANDS = ["index", "ask", "search", "maps", "info", "delete", "compact"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(command):
    argv = ["--help"] if command is None else [command, "--help"]
    status, out, err = run_cli(*argv)
    assert status == 0
    assert out.startswith(f"usage: llama-index-vlm{'' if command is None else ' ' + command}")
    assert "--store" in out or command is None


def test_parser_defaults_are_the_libraries_checkpoints():
    from llama_index_vlm.encoder import DEFAULT_ENCODER as LIBRARY_ENCODER
    from llama_index_vlm.vlm import DEFAULT_VLM as LIBRARY_VLM

    assert (DEFAULT_ENCODER, DEFAULT_VLM) == (LIBRARY_ENCODER, LIBRARY_VLM)


def test_ask_defaults_to_the_default_store_vlm_and_three_pages():
    args = build_parser().parse_args(["ask", "q"])
    assert (args.store, args.vlm, args.model, args.k) == (DEFAULT_STORE, DEFAULT_VLM, None, 3)
    assert DEFAULT_STORE == "./vlm_index"


@pytest.mark.parametrize(
    "argv",
    [["search"], ["search", "q", "-k", "0"], ["index"], ["maps", "q", "--out", "x.png"]],
    ids=["no-query", "k-zero", "no-path", "no-page"],
)
def test_argument_errors_exit_2(argv):
    status, _, err = run_cli(*argv)
    assert status == 2
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, address",
    [
        (["index", "docs"], None),
        (["index", "docs", "--ray"], "local"),
        (["index", "docs", "--ray", "auto"], "auto"),
        (["index", "docs", "--ray", "ray://head:10001"], "ray://head:10001"),
        (["index", "--ray", "10.0.0.5:6379", "docs"], "10.0.0.5:6379"),
    ],
)
def test_index_ray_takes_an_optional_cluster_address(argv, address):
    assert build_parser().parse_args(argv).ray == address


def test_index_ray_refuses_a_path_taken_for_its_address():
    status, _, err = run_cli("index", "--ray", "reports/")
    assert status == 2
    assert "not a Ray address" in err and "put --ray after the paths" in err
