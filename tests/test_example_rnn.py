"""Example 05 runs at tiny settings and prints what its docstring promises."""
import math
import pathlib
import re
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "05_rnn_lstm_gru.py"


def test_example_05_tiny():
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--tiny"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    V = int(re.search(r"V = (\d+)", out).group(1))
    assert V > 50  # the embedded corpus has letters, digits and punctuation
    uniform = float(re.search(r"log\(V\) = ([\d.]+)", out).group(1))
    assert uniform == round(math.log(V), 2)
    steps = re.findall(r"step\s+(\d+)\s+loss\s+(\S+)\s+sample: (.*)", out)
    assert [int(s) for s, _, _ in steps] == [0, 10, 20, 30]
    assert steps[0][1] == "-"
    losses = [float(loss) for _, loss, _ in steps[1:]]
    # Training lowers the loss below uniform guessing, and keeps lowering it.
    assert losses[0] < uniform and losses[-1] < losses[0]
    assert all(sample.startswith("'The ") or sample.startswith('"The ') for _, _, sample in steps)
    assert "30 steps in" in out and "gradient norm clipped on" in out
    carried = float(re.search(r"state carried across chunks:\s+([\d.]+)", out).group(1))
    reset = float(re.search(r"state reset every chunk:\s+([\d.]+)", out).group(1))
    assert carried < uniform and reset < uniform


def test_example_05_help():
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "--tiny" in proc.stdout and "--steps" in proc.stdout and "--cell" in proc.stdout
