"""Example 11 (the modern decoder) runs at tiny settings and prints what its docstring promises.

The parameter counts are checked by hand: at --tiny, C = 16, one layer, T = 16, V characters
(87 with CPython 3.11's corpus). GPT: V C + T C + (12 C^2 + 13 C) + 2 C = 16 V + 256 + 3280 + 32.
Llama with I = round((8 C + 11 + (T + 1)) / 3) = round(156 / 3) = 52: V C + (4 C^2 + 3 C I +
2 C) + C = 16 V + (1024 + 2496 + 32) + 16, the same 16 V + 3568 (4960 for V = 87).
"""
from __future__ import annotations

import math
import re

from example_runner import run_example

EXAMPLE = "11_llama_modern_decoder.py"


def run(*argv: str) -> str:
    return run_example(EXAMPLE, *argv).stdout


def floats(pattern: str, text: str) -> list[float]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return [float(g.replace(",", "")) for g in match.groups()]


def test_help():
    assert "--tiny" in run("--help")


def test_tiny_run_shows_each_difference_and_trains_both():
    out = run("--tiny")
    # 1. RMSNorm equals LayerNorm exactly when the mean is 0, not otherwise.
    assert "mean 0.0: rms_norm" in out and re.search(r"mean 0\.0:.*equal: True", out)
    assert re.search(r"mean 2\.5:.*equal: False", out)
    # 2. RoPE: equal scores at equal distances, a different one at another distance.
    a, b, c = floats(r"\(5, 2\): ([-+.\d]+);\s+\(12, 9\): ([-+.\d]+);\s+\(3, 2\): ([-+.\d]+)",
                     out)
    assert a == b and a != c
    same, hf, wrong = floats(r"rows permuted: ([-+.\d]+) \(HF: ([-+.\d]+)\); not permuted: "
                             r"([-+.\d]+)", out)
    assert same == hf and abs(wrong - hf) > 1e-3
    # 3. SwiGLU at width 8C/3 holds as many weights as GPT-2's MLP: 3 * 96 * 256 = 2 * 96 * 384.
    assert floats(r"I = 8C/3 = 256: ([\d,]+) weights; GPT-2's c_fc and c_proj of width 4C: "
                  r"([\d,]+)", out) == [73728.0, 73728.0]
    # 4. One key-value head: 2 * 1 * 24 * 4 bytes; the cache holds Hkv = 1 head; exact decoding.
    assert "1 key-value heads of 24: 192 bytes" in out
    assert "(2, 1, 1, 32, 24)" in out
    assert floats(r"stepping vs forward: max difference ([\d.e+-]+)", out)[0] < 1e-5
    # 5. Equal budgets (see the module docstring), both losses below a uniform guess.
    V = floats(r"V = (\d+)\)", out)[0]
    gpt = floats(r"GPT\s+([\d,]+) parameters: train loss ([\d.]+) -> ([\d.]+), validation "
                 r"([\d.]+)", out)
    llama = floats(r"Llama\s+([\d,]+) parameters: train loss ([\d.]+) -> ([\d.]+), validation "
                   r"([\d.]+)", out)
    assert gpt[0] == V * 16 + 256 + 3280 + 32 and llama[0] == V * 16 + 3552 + 16
    for first, last, val in (gpt[1:], llama[1:]):
        assert last < first and val < math.log(V)
