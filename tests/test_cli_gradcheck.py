"""`numpylm gradcheck` prints one passing line per registered op and fails on a bad op."""
import subprocess
import sys

import numpylm  # noqa: F401  (registers every op)
from numpylm.autograd import REGISTRY, op
from numpylm.autograd.gradcheck_inputs import GRADCHECK_INPUTS, gradcheck_inputs
from numpylm.cli import main


def test_gradcheck_command_passes_every_op(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        line = next(l for l in out.splitlines() if l.split() and l.split()[0] == name)
        assert line.rstrip().endswith("pass"), line
    assert f"{len(REGISTRY)} of {len(REGISTRY)} ops pass" in out


def test_gradcheck_command_fails_on_a_wrong_rule(capsys):
    @op(name="_cli_wrong")
    def wrong(x):
        return 2 * x, lambda g: (g,)  # wrong on purpose: d(2x)/dx = 2

    gradcheck_inputs("_cli_wrong")(lambda rng: (wrong, (rng.standard_normal(3),)))
    try:
        assert main(["gradcheck", "--ops", "_cli_wrong", "relu"]) == 1
        out = capsys.readouterr().out
        assert "FAIL" in out and "1 of 2 ops pass" in out
    finally:
        REGISTRY.pop("_cli_wrong")
        GRADCHECK_INPUTS.pop("_cli_wrong")


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "numpylm", "gradcheck", "--ops", "tanh"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 ops pass" in proc.stdout
