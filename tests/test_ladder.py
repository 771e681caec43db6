"""`numpylm ladder` at tiny settings: every rung runs and the table says what it should."""
import csv
import io

import pytest

from numpylm.cli import main
from numpylm.ladder import ALL_MODELS, LadderConfig, format_markdown, run_ladder


@pytest.fixture(scope="module")
def rungs():
    config = LadderConfig(budget_seconds=0.3, tiny=True, max_chars=12000, sample_chars=20,
                          eval_items=0)
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
    lines = [line for line in table.strip().splitlines() if line.startswith("|")]  # not the note
    assert lines[0] == ("| model | parameters | training seconds | validation bits/char "
                        "| sample |")
    assert len(lines) == 2 + len(rungs)
    assert all(line.count("|") - line.count("\\|") == 6 for line in lines)


def test_command_writes_csv(tmp_path, capsys):
    out = tmp_path / "ladder.csv"
    code = main(["ladder", "--tiny", "--budget-seconds", "0.2", "--max-chars", "8000",
                 "--models", "ngram1,ngram2,bigram", "--format", "csv", "--output", str(out),
                 "--eval-items", "0"])
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


def test_one_validation_number_per_model_and_cut_short_runs_are_marked():
    lines = []
    run_ladder(LadderConfig(models=("bigram",), budget_seconds=0.3, tiny=True, max_chars=6000,
                            sample_chars=10), log=lines.append)
    assert not any("val loss" in line for line in lines)  # only the table's exact figure
    from numpylm.ladder import Rung, format_csv
    rungs = [Rung("gru", 10, 1.0, 2.0, "ab", 5, cut_short=True), Rung("gpt", 10, 1.0, 2.1, "cd", 9)]
    table = format_markdown(rungs)
    assert "| gru † |" in table and "| gpt |" in table and "stopped by the time cap" in table
    assert "stopped by the time cap" not in format_markdown(rungs[1:])
    rows = list(csv.reader(io.StringIO(format_csv(rungs))))
    assert rows[0][-1] == "cut short" and [r[-1] for r in rows[1:]] == ["1", "0"]


def test_the_eta_counts_the_time_cap():
    """With a time cap far shorter than the planned steps, the ETA is the cap's, not the
    schedule's."""
    import numpy as np

    from numpylm.models.bigram import BigramLM
    from numpylm.tokenizers import CharTokenizer
    from numpylm.training import TrainConfig, prepare_data, train

    text = "abcabcabd" * 200
    tok = CharTokenizer.from_text(text)
    lines = []
    train(BigramLM(tok.vocab_size), prepare_data(tok, text=text),
          TrainConfig(steps=10**6, batch_size=2, block_size=4, log_interval=50,
                      eval_interval=10**6, max_seconds=0.5), log=lines.append)
    etas = [line.split("ETA ")[1] for line in lines if "ETA" in line]
    assert etas and all(eta.startswith("0m0") for eta in etas), etas


@pytest.fixture(scope="module")
def scored_rungs():
    """Three rungs on the whole corpus (the tasks need its held-out tail), four items a task."""
    lines = []
    rungs = run_ladder(LadderConfig(models=("ngram1", "ngram4", "bigram"), budget_seconds=0.3,
                                    tiny=True, sample_chars=10, eval_items=4), log=lines.append)
    return rungs, lines


def test_every_rung_is_scored_on_the_built_in_tasks(scored_rungs):
    rungs, lines = scored_rungs
    columns = ["next_sentence acc_norm (n=4)", "identifier_cloze acc (n=4)",
               "arithmetic exact (n=4)"]
    for r in rungs:
        assert list(r.tasks) == columns, r.model
        for value, stderr in r.tasks.values():
            assert value in (0.0, 0.25, 0.5, 0.75, 1.0)
            # the binomial standard error with n - 1, by hand: sqrt(m (1 - m) / 3)
            assert stderr == pytest.approx((value * (1 - value) / 3) ** 0.5)
    assert any("ngram4 (KN): next_sentence acc_norm (n=4)" in line for line in lines)
    table = format_markdown(rungs)
    header = table.splitlines()[0]
    assert header == ("| model | parameters | training seconds | validation bits/char | "
                      + " | ".join(columns) + " | sample |")
    assert "Task columns: value ± standard error" in table
    from numpylm.ladder import format_csv
    rows = list(csv.reader(io.StringIO(format_csv(rungs))))
    assert rows[0][4:6] == [columns[0], columns[0] + " stderr"] and len(rows[1]) == len(rows[0])


def test_a_text_too_short_for_a_task_leaves_its_column_out():
    lines = []
    rungs = run_ladder(LadderConfig(models=("ngram2",), budget_seconds=0.2, tiny=True,
                                    max_chars=12000, sample_chars=10, eval_items=3),
                       log=lines.append)
    assert any("no next_sentence column" in line and "too short" in line for line in lines)
    assert not any(c.startswith("next_sentence") for c in rungs[0].tasks)
