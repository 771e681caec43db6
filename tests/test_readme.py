"""The README's code snippets run and print what the README says they print."""
import doctest
import pathlib

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, "the README has no runnable snippet"
    assert result.failed == 0, f"{result.failed} README snippet(s) failed"
