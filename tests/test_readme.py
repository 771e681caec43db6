"""The README's code snippets run and print what the README says they print."""
import doctest
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_doctest_snippets():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, "the README has no runnable snippet"
    assert result.failed == 0, f"{result.failed} README snippet(s) failed"


def test_readme_code_blocks_run_and_their_tests_pass():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if not b.lstrip().startswith(">>>")]
    assert blocks, "the README has no plain python block"
    for block in blocks:
        # Run each block in a fresh interpreter (it may register ops), then call the test
        # functions it defines, as pytest would.
        runner = block + (
            "\nimport inspect as _inspect\n"
            "_tests = [f for n, f in list(globals().items()) if n.startswith('test_') and callable(f)]\n"
            "for _t in _tests:\n    _t()\n"
            "print('ran', len(_tests), 'tests')\n")
        proc = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "ran" in proc.stdout
