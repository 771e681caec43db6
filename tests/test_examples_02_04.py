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


# ---- 04 neural bigram and MLP ------------------------------------------------------------

def test_example_04_neural_bigram_and_mlp():
    out = run("04_neural_bigram_mlp.py", "--tiny")
    V = int(number(r"V = (\d+),", out))
    log_v = number(r"log V = ([\d.]+) nats", out)
    assert log_v == pytest.approx(math.log(V), abs=1e-3)
    count_train = number(r"count bigram \(add-0\.1\): train ([\d.]+)", out)
    count_val = number(r"count bigram .*held-out ([\d.]+) nats", out)
    # Zero logits are the uniform distribution: exactly log V before any step.
    assert number(r"before training: train ([\d.]+)", out) == pytest.approx(log_v, abs=1e-3)
    batch = [float(v) for v in re.findall(r"step \d+: ([\d.]+)", out)]
    assert batch[0] == pytest.approx(log_v, abs=1e-3) and batch[-1] < batch[0] - 1.5
    # Trained, the neural bigram is close to the count bigram on the text it learned from,
    # and on held-out text (no better than its own training allows: within 0.1 nats).
    bigram_train = number(r"after 100 steps: train ([\d.]+)", out)
    bigram_val = number(r"after 100 steps: .*held-out ([\d.]+)", out)
    assert abs(bigram_train - count_train) < 0.05
    assert abs(bigram_val - count_val) < 0.1
    # The learned row for 'q' matches the counted one on its likeliest letter.
    counted, learned = (float(v) for v in
                        re.search(r"'u' ([\d.]+) vs ([\d.]+)", out).groups())
    assert counted > 0.5 and abs(counted - learned) < 0.05
    # The MLP beats both bigrams on held-out text; its loss fell from about log V.
    first, last = (float(v) for v in
                   re.search(r"training batch loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert abs(first - log_v) < 0.3 and last < first - 1.5
    mlp_val = number(r"held-out ([\d.]+) nats per character \(", out)
    assert mlp_val < count_val and mlp_val < bigram_val
    assert number(r"\(([\d.]+) below the count bigram", out) == pytest.approx(
        count_val - mlp_val, abs=2e-3)
    assert 0 < number(r"4-gram, Kneser-Ney, for reference: held-out ([\d.]+)", out) < mlp_val
    for name in ("bigram", "MLP"):
        sample = out.split(f"{name} sample (seed 0):\n")[1]
        assert sample.startswith("The ") and len(sample) > 40


# ---- help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,flag", [("02_tokenization_bpe.py", "--png"),
                                       ("03_ngram_smoothing.py", "--max-order"),
                                       ("04_neural_bigram_mlp.py", "--mlp-steps")])
def test_examples_take_help(name, flag):
    out = run(name, "--help")
    assert flag in out and "--tiny" in out
