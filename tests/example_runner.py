"""Running an example as a reader would, for the example tests: `python examples/NAME ARGS`."""
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run examples/`name` with `argv`; fail the test, showing stderr, unless it exits 0."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *argv], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc
