"""Example 13 runs at tiny settings and prints the table, the paired differences and the
shared-context check its docstring promises."""
from __future__ import annotations

import re

from example_runner import run_example

EXAMPLE = "13_benchmarks.py"


def run(*argv: str) -> str:
    return run_example(EXAMPLE, *argv).stdout


def test_help():
    assert "--tiny" in run("--help")


def test_example_13_benchmarks():
    out = run("--tiny")
    assert "| task " in out and "| 5-gram - GPT [95% CI]" in out
    for task, metric in [("next_sentence", "acc"), ("identifier_cloze", "acc_norm"),
                         ("arithmetic", "exact_match"), ("corpus_bpb", "bits_per_byte")]:
        assert re.search(rf"^\| {task} +\| {metric} +\|", out, re.M), (task, metric)
    # Every accuracy has an error bar; the uniform guess's token perplexity is V = 103.
    acc_rows = [line for line in out.splitlines() if re.match(r"\| \w+ +\| (acc|exact)", line)]
    assert acc_rows and all(line.count("±") >= 2 for line in acc_rows)
    row = next(line for line in out.splitlines() if "token_perplexity" in line)
    assert row.split("|")[5].strip() == "103.0000"
    # Shared-context scoring gives the from-scratch numbers.
    diffs = [float(x) for x in re.findall(r"largest difference (\S+) nats", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-4
