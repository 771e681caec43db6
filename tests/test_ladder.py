"""`numpylm ladder` at tiny settings: every rung runs and the table says what it should."""
import csv
import io

import pytest

from numpylm.cli import main
from numpylm.ladder import ALL_MODELS, LadderConfig, format_markdown, run_ladder


@pytest.fixture(scope="module")
def rungs():
    config = LadderConfig(budget_seconds=0.3, tiny=True, max_chars=12000, sample_chars=20)
    return run_ladder(config, log=lambda line: None)


def test_every_rung_runs_in_order(rungs):
    assert [r.model.split()[0] for r in rungs] == list(ALL_MODELS)
    for r in rungs:
        assert 0 < r.val_bpc < 8, r          # a character vocabulary of ~100 has log2 V < 7
        assert r.parameters > 0 and r.train_seconds >= 0
        assert len(r.sample) > 0


def test_longer_contexts_help_the_count_models(rungs):
    bpc = {r.model.split()[0]: r.val_bpc for r in rungs}
    assert bpc["ngram3"] < bpc["ngram2"] < bpc["ngram1"]


def test_neural_rungs_train_for_whole_steps(rungs):
    for r in rungs:
        if not r.model.startswith("ngram"):
            assert r.steps is not None and r.steps >= 1


def test_markdown_table(rungs):
    table = format_markdown(rungs)
    lines = table.strip().splitlines()
    assert lines[0] == ("| model | parameters | training seconds | validation bits/char "
                        "| sample |")
    assert len(lines) == 2 + len(rungs)
    assert all(line.count("|") - line.count("\\|") == 6 for line in lines)


def test_command_writes_csv(tmp_path, capsys):
    out = tmp_path / "ladder.csv"
    code = main(["ladder", "--tiny", "--budget-seconds", "0.2", "--max-chars", "8000",
                 "--models", "ngram1,ngram2,bigram", "--format", "csv", "--output", str(out)])
    assert code == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][0] == "model" and [r[0] for r in rows[1:]] == ["ngram1 (KN)", "ngram2 (KN)",
                                                                 "bigram"]
    printed = capsys.readouterr().out
    assert "ladder:" in printed and "bits/char" in printed  # progress shown as it goes


def test_command_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ladder.png"
    assert main(["ladder", "--tiny", "--budget-seconds", "0.2", "--max-chars", "6000",
                 "--models", "ngram1,ngram2", "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_unknown_model_is_refused(capsys):
    assert main(["ladder", "--models", "ngram1,transformer-xl"]) == 2
    assert "transformer-xl" in capsys.readouterr().out
