"""Example 15 runs at tiny settings and prints what its docstring promises: short requests finish
early under continuous batching, every output equals generate's, the paged pool is smaller than
contiguous caches, and pre-emption changes nothing but the speed."""
from __future__ import annotations

import re

from example_runner import run_example

EXAMPLE = "15_serving.py"


def run(*argv: str) -> str:
    return run_example(EXAMPLE, *argv).stdout


def test_help():
    assert "--tiny" in run("--help")


def test_example_15_serving():
    out = run("--tiny")
    # The short requests finish within a few steps of arriving, long before the long one.
    steps = [int(s) for s in re.search(r"\(steps \[([\d, ]+)\]\)", out).group(1).split(", ")]
    long_step = int(re.search(r"the long one after \S+ s \(step (\d+)\)", out).group(1))
    assert len(steps) == 6 and max(steps) < long_step
    assert all(s - (1 + i) <= 8 for i, s in enumerate(steps))  # 8 tokens: about 8 steps
    assert "Same tokens as generate's greedy decoding: True" in out
    paged, contiguous = map(int, re.search(r"= (\d+) KiB; contiguous .*?: (\d+) KiB", out).groups())
    assert paged < contiguous
    m = re.search(r"(\d+) pre-emptions, same tokens as generate: (\w+), every block free at the "
                  r"end: (\w+)", out)
    assert int(m.group(1)) > 0 and m.group(2) == "True" and m.group(3) == "True"
