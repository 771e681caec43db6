"""Example 15 runs at tiny settings and prints what its docstring promises: short requests finish
early under continuous batching, every output equals generate's, the paged pool is smaller than
contiguous caches, pre-emption changes nothing but the speed, and requests with a common
system prompt share its blocks without changing a token."""
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
    # Point 5: six prompts = the same 100-token system prompt + a short tail, pages of 16.
    # Only full blocks of the system prompt alone can be shared (tokens 0-95: 6 blocks), by
    # the five requests after the first: at most 30 hits, and some once the first has read it.
    m = re.search(r"(\d+) blocks of it shared instead of computed \((\d+) prompt tokens not "
                  r"read again; without sharing (\d+)\).*same tokens as without sharing: "
                  r"(\w+), as generate: (\w+)", out)
    hits, tokens, unshared = map(int, m.group(1, 2, 3))
    assert 0 < hits <= 5 * (100 // 16) and tokens == 16 * hits and unshared == 0
    assert m.group(4) == "True" and m.group(5) == "True"
