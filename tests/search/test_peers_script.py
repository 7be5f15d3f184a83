"""benchmarks/peers/peers.py's own parts, without the peers' venvs (a 10k-page peer run takes
hours; a bad option must fail before it starts, not after ours has run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_venv_gives_a_row_saying_so_beside_ours(peers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(peers, "HERE", tmp_path)  # no venvs there
    peers.main(
        [
            "--pages",
            "30",
            "--queries",
            "3",
            "--peers",
            "pylate-voyager",
            "--peer-args",
            'pylate-voyager={"M": 16}',
        ]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]

    assert rows[0].startswith("| engine | pages | p50 ms | recall@10 |")
    ours = rows[1].split(" | ")
    assert ours[0] == "| ours (FastPageIndex)" and ours[3] == "1.000"
    assert rows[2] == '| pylate-voyager {"M": 16} | 30 | - | - | - | not installed (setup.sh) |'


@pytest.mark.parametrize(
    "value, message",
    [
        ('nope={"M": 16}', "unknown peer 'nope'"),
        ("pylate-plaid={n_samples_kmeans: 1000}", "pylate-plaid: not JSON"),
        ("fast-plaid=[1000]", "expected a JSON object"),
    ],
)
def test_bad_peer_arguments_stop_before_the_run(peers, value, message, capsys):
    with pytest.raises(SystemExit):
        peers.main(["--pages", "30", "--peer-args", value])

    assert message in capsys.readouterr().err


def test_the_older_fast_plaid_option_still_reaches_fast_plaid(peers, tmp_path, monkeypatch):
    calls = []
    python = tmp_path / ".venv-fast-plaid" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    monkeypatch.setattr(peers, "HERE", tmp_path)
    monkeypatch.setattr(
        peers.subprocess, "run", lambda command, **_: calls.append(command) or _Failed()
    )
    peers.main(
        [
            "--pages",
            "20",
            "--queries",
            "2",
            "--peers",
            "fast-plaid",
            "--fast-plaid-create",
            '{"n_samples_kmeans": 10}',
        ]
    )

    (command,) = calls
    assert command[-2:] == ["--peer-args", '{"n_samples_kmeans": 10}']


class _Failed:
    returncode = 1
    stderr = "stopped by the test"
