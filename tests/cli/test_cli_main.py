"""``main``: exit statuses, the light imports of ``--help``, and the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli


def test_no_command_prints_help_and_fails():
    status, _, err = run_cli()
    assert status == 2
    assert "usage: llama-index-vlm" in err


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["ask", "--help"], 0), (["search"], 2), (["index", "x", "--dtype", "int4"], 2)],
    ids=["help", "missing-argument", "bad-choice"],
)
def test_help_and_argument_errors_import_no_heavy_module(argv, status):
    code = (
        "import sys, contextlib, io\n"
        "from llama_index_vlm.cli import main\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        f"    assert main({argv!r}) == {status}\n"
        "heavy = ('torch', 'transformers', 'lancedb', 'llama_index', 'numpy')\n"
        "assert not [name for name in heavy if name in sys.modules], sys.modules.keys()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def console_script() -> str:
    script = Path(sys.executable).parent / "llama-index-vlm"
    if not script.exists():
        found = shutil.which("llama-index-vlm")
        if found is None:
            pytest.skip("the llama-index-vlm console script is not installed")
        return found
    return str(script)


def test_console_script_entry_point(tmp_path):
    # The installed script's exit status and streams; the commands' work is tested in-process.
    missing = subprocess.run(
        [console_script(), "search", "q", "--store", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"error: no index at {tmp_path / 'none'}; run `llama-index-vlm index PATH "
        f"--store {tmp_path / 'none'}` first\n"
    )
