"""Example 01 runs and shows what its docstring promises."""
import pathlib
import re
import subprocess
import sys

from numpylm.autograd import REGISTRY

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "01_autograd_gradcheck.py"


def test_example_01(tmp_path):
    dot = tmp_path / "g.dot"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--dot", str(dot)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    diff = float(re.search(r"largest difference:\s+(\S+)", out).group(1))
    assert diff < 1e-7
    assert "gradcheck passed" in out
    assert re.search(r"gradcheck caught it: .*input 0 .*index \(0, 0\)", out)
    assert "after one backward: 6.0, after two: 12.0" in out
    text = dot.read_text()
    assert text.startswith("digraph") and '"tanh"' in text and '"mul"' in text


def test_example_01_help():
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--dot" in proc.stdout
    assert "example_softplus" not in REGISTRY
