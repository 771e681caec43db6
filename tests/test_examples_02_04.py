"""Examples 02, 03 and 04 run at tiny settings and print what their docstrings promise."""
from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def run(name: str, *argv: str, hide_matplotlib: bool = False) -> str:
    path = str(EXAMPLES / name)
    if hide_matplotlib:
        # A None entry in sys.modules makes `import matplotlib` raise ImportError, as on a
        # machine without the plot extra.
        code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
                f"sys.argv = {[path, *argv]!r}; runpy.run_path({path!r}, run_name='__main__')")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, path, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


# ---- 02 tokenization ----------------------------------------------------------------------

def test_example_02_tokenization(tmp_path):
    png = tmp_path / "tokens.png"
    out = run("02_tokenization_bpe.py", "--tiny", "--png", str(png))
    # An unseen character has no id in a char tokenizer: 'ü' is the first one in the text.
    assert "ValueError: character 'ü' at position 2" in out
    # --tiny asks for 300 ids: 300 - 256 = 44 merges, numbered from 256 on.
    assert "44 merges learned" in out
    merges = re.findall(r"'(.*?)' \+ '(.*?)'\s+-> (\d+)", out)
    assert [int(new) for _, _, new in merges] == list(range(256, 266))
    # Characters are one token each; BPE must need fewer tokens than characters.
    assert number(r"chars (\S+) tokens per character", out) == 1.0
    assert 0.3 < number(r"BPE (\S+)\n", out) < 1.0
    # Byte fallback: 'é' is U+00E9, UTF-8 C3 A9 = [195, 169]; the emoji F0 9F 90 8D.
    assert "round trip exact: True" in out
    assert "'é' -> [195, 169], '🐍' -> [240, 159, 144, 141]" in out
    # Byte-level BPE never needs more tokens than the text has UTF-8 bytes.
    assert "26 characters, 40 UTF-8 bytes" in out
    assert number(r"40 UTF-8 bytes, (\d+) BPE tokens", out) <= 40
    # The special token gets the first id after the 300 ordinary ones.
    assert "special token '<|endoftext|>' = id 300" in out
    assert "containing id 300: True" in out
    assert "disallowed (the default) raises ValueError" in out
    assert number(r"the marker alone is (\d+) tokens", out) > 1
    assert "same merges: True" in out
    assert number(r"\((\d+)x faster\)", out) >= 1
    assert "numpylm's file: same ids True" in out and "merges.txt: same ids True" in out
    if "no picture" not in out:
        assert png.read_bytes().startswith(PNG)


def test_example_02_without_matplotlib(tmp_path):
    png = tmp_path / "tokens.png"
    out = run("02_tokenization_bpe.py", "--tiny", "--png", str(png), hide_matplotlib=True)
    assert "no picture: plotting needs matplotlib" in out
    assert not png.exists()
    assert "same merges: True" in out  # the rest of the example still ran


# ---- 03 n-gram smoothing ------------------------------------------------------------------

def test_example_03_ngram_smoothing():
    out = run("03_ngram_smoothing.py", "--tiny")
    V = int(number(r"V = (\d+);", out))
    table = {}
    for line in out.splitlines():
        match = re.match(r"\s+(\d) ((?:\s+\S+ \(\s*\S+\)){5})$", line)
        if match:
            cells = re.findall(r"(\S+) \(\s*(\S+)\)", match.group(2))
            table[int(match.group(1))] = [(float(b), float(p)) for b, p in cells]
    assert sorted(table) == [1, 2, 3, 4, 5]
    for order, cells in table.items():
        mle, add1, add001, kn, mkn = cells
        assert mle == (math.inf, math.inf) or order == 1
        for bits, ppl in (add1, add001, kn, mkn):
            # Smoothed models give every character probability > 0: finite, below uniform.
            assert 0 < bits < math.log2(V)
            assert ppl == pytest.approx(2.0 ** bits, rel=2e-3)
    # Kneser-Ney improves with every order here; add-1 is worse at 5 than at 3.
    kn_bits = [table[n][3][0] for n in range(1, 6)]
    assert kn_bits == sorted(kn_bits, reverse=True)
    assert table[5][1][0] > table[3][1][0]
    assert table[5][4][0] < table[5][2][0] < table[5][1][0]  # modified KN < add-0.01 < add-1

    zeros = [float(z) for z in re.findall(r"\d: ([\d.]+)%", out.split("2. MLE")[1].split("\n")[0])]
    assert len(zeros) == 5 and zeros == sorted(zeros) and zeros[-1] > zeros[1] > 0
    # Backoff: an unseen context scores like the shortest seen suffix, exactly.
    high = number(r"'zzzq'\) = ([\d.]+)", out)
    assert high == number(r"P\('u' \| 'q'\) = ([\d.]+)", out) and high > 0

    rows = dict(re.findall(r"^\s+(MLE|add-1|add-0\.01|KN|modified KN): .*unseen: ([\d.]+); "
                           r"sum 1\.000$", out, flags=re.M))
    assert len(rows) == 5
    assert float(rows["MLE"]) == 0.0
    assert all(float(rows[k]) > 0 for k in ("add-1", "add-0.01", "KN", "modified KN"))
    # Add-1 gives each unseen character k / (c(h) + kV): 1/103 here, after only 11 'yie's.
    assert float(rows["add-1"]) > float(rows["KN"])
    assert number(r"add-1: 'l': ([\d.]+)", out) < number(r" KN: 'l': ([\d.]+)", out)


def test_example_03_samples_are_seeded():
    def sample(seed: str) -> str:
        out = run("03_ngram_smoothing.py", "--tiny", "--max-order", "3", "--seed", seed)
        return out.split(f"(seed {seed}):")[1]
    first = sample("1")
    assert len(first) > 40
    assert first == sample("1")
    assert first != sample("2")


# ---- help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,flag", [("02_tokenization_bpe.py", "--png"),
                                       ("03_ngram_smoothing.py", "--max-order")])
def test_examples_take_help(name, flag):
    out = run(name, "--help")
    assert flag in out and "--tiny" in out
