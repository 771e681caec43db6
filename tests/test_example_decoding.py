"""Example 12 (decoding beyond sampling) runs at tiny settings and prints what its docstring
promises: beam search at least as likely as greedy, penalties applied, log-probabilities with
alternatives, speculative output identical to greedy, constrained outputs that match."""
import re
import subprocess

from example_runner import run_example

EXAMPLE = "12_decoding.py"


def run(*argv: str) -> subprocess.CompletedProcess:
    return run_example(EXAMPLE, *argv)


def test_help():
    out = run("--help").stdout
    assert "--tiny" in out and "--new-tokens" in out


def test_example_12_tiny():
    out = run("--tiny").stdout
    assert "beam search finds a sequence at least as likely as greedy: True" in out
    greedy = float(re.search(r"greedy\s+(-[\d.]+)", out).group(1))
    beam = float(re.search(r"beam search\s+(-[\d.]+)", out).group(1))
    assert beam >= greedy
    assert len(re.findall(r"repeated 4-grams +\d+", out)) == 3
    # Five tokens, each with three alternatives whose first is the (greedy) token itself.
    rows = re.findall(r"^   ('.*?'): p ([\d.]+)   \(('.*?') ([\d.]+),", out, re.M)
    assert len(rows) == 5 and all(tok == first for tok, _, first, _ in rows)
    # Speculative decoding: every run identical to greedy, acceptance a fraction.
    runs = re.findall(r"identical to greedy: (\w+); acceptance ([\d.]+); ([\d.]+) tokens per", out)
    assert len(runs) == 6 and all(same == "True" for same, _, _ in runs)  # GPT, GRU, lookup
    assert len(re.findall(r"GRU draft, k=\d", out)) == 2
    assert all(0 <= float(a) <= 1 and float(t) >= 1 for _, a, t in runs)
    # Constrained outputs match their patterns.
    matches = re.findall(r"^   (a date|a choice|JSON) +matches: (\w+)  '(.*)'$", out, re.M)
    assert [m[:2] for m in matches] == [("a date", "True"), ("a choice", "True"), ("JSON", "True")]
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", matches[0][2])
    assert matches[1][2] in ("True", "False", "None")
