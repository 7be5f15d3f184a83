"""``ask --quantization``: a quantisation the device cannot run fails with one line naming the
option and what works instead."""

from __future__ import annotations

from cli_runner import run_cli


def test_bitsandbytes_on_a_cpu_fails_with_one_line_naming_int8(indexed, tiny_checkpoint):
    status, out, err = run_cli(
        "ask",
        "What?",
        "--store",
        indexed["store"],
        "--device",
        "cpu",
        "--vlm",
        tiny_checkpoint("qwen2_vl"),
        "--quantization",
        "4bit",
    )
    assert status == 2 and out == ""
    assert err.splitlines()[-1].startswith("error: --quantization 4bit: ")
    assert "quantization='int8'" in err and "Traceback" not in err


def test_an_unknown_quantisation_is_a_usage_error(indexed):
    status, _, err = run_cli("ask", "What?", "--store", indexed["store"], "--quantization", "2bit")
    assert status == 2 and "invalid choice: '2bit'" in err
