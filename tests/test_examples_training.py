"""Examples 07 and 09 run at tiny settings and print what their docstrings promise."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *argv: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_example_07_training_loop():
    out = run("07_training_loop.py", "--tiny")
    progress = re.findall(r"step (\d+)/6 \| loss (\S+) \| lr (\S+) \| \S+ tok/s \| ETA", out)
    assert [int(s) for s, _, _ in progress] == [1, 2, 3, 4, 5, 6]
    assert "val loss" in out and "bits/char" in out
    # Gradient accumulation: the same weights up to float64 rounding.
    diff = float(re.search(r"max weight difference (\S+)", out).group(1))
    assert diff < 1e-12
    assert "bit-identical: True" in out
    assert "no longer finite" in out
    assert "stopped: nonfinite; the checkpoint on disk is still step 6" in out


def test_example_09_evaluation():
    out = run("09_evaluation.py", "--tiny")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"(char|bpe)\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                     line)
        if m:
            rows[(m.group(1), m.group(2))] = [float(v) for v in m.groups()[2:]]
    assert ("char", "2-gram counts") in rows and ("bpe", "neural bigram") in rows
    # The uniform guess: perplexity V and log2(V) bits per token (V=87 chars, 300 BPE ids).
    loss, ppl, bpt, bpc, _ = rows[("char", "uniform (V=87)")]
    assert ppl == pytest.approx(87.0) and bpt == pytest.approx(6.443, abs=1e-3) and bpc == bpt
    _, ppl, bpt, bpc, bpb = rows[("bpe", "uniform (V=300)")]
    assert ppl == pytest.approx(300.0) and bpc < bpt and bpb <= bpc
    # Counting beats guessing, and a longer context beats a shorter one.
    for tok in ("char", "bpe"):
        assert rows[(tok, "2-gram counts")][3] < rows[(tok, "1-gram counts")][3] < \
            rows[(tok, f"uniform (V={87 if tok == 'char' else 300})")][3]
    assert "loop's estimate" in out


@pytest.mark.parametrize("name", ["07_training_loop.py", "09_evaluation.py"])
def test_examples_take_help(name):
    assert "--tiny" in run(name, "--help")
