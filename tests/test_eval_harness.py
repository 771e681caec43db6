"""The harness end to end: a fixture computed in plain Python, the table of tasks x models with
error bars and the paired difference, and the `numpylm evaluate` command."""
from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import re

import numpy as np
import pytest

from numpylm.autograd.tensor import Tensor
from numpylm.cli import main
from numpylm.corpus import embedded_corpus
from numpylm.evaluation.harness import results_json, results_table, run_task
from numpylm.evaluation.stats import stderr_of_mean
from numpylm.evaluation.tasks import Task
from numpylm.models.decoding import WindowState
from numpylm.tokenizers import CharTokenizer
from numpylm.training.checkpoint import save_checkpoint
from numpylm.training.families import build_model

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "eval_mc_fixture.json")
                     .read_text(encoding="utf-8"))


class TableBigram:
    block_size = None

    def __init__(self, probs) -> None:
        self.table = np.log(np.asarray(probs, dtype=np.float64))
        self.vocab_size = self.table.shape[0]

    def forward(self, idx, targets=None):
        return Tensor(self.table[np.asarray(idx)]), None

    __call__ = forward

    def init_state(self, batch_size: int = 1) -> WindowState:
        return WindowState(batch_size, 1, fill=0)

    def step(self, state, ids, mask=None) -> np.ndarray:
        state.push(np.asarray(ids), mask)
        return self.table[state.window[:, -1]]


def _fixture_task() -> Task:
    items = [{k: item[k] for k in ("context", "choices", "gold")} for item in FIXTURE["items"]]
    return Task("fixture", "multiple_choice", items)


@pytest.mark.parametrize("shared", [True, False])
def test_multiple_choice_matches_the_plain_python_fixture(shared):
    """tests/fixtures/eval_make_mc_fixture.py computed every number without numpylm."""
    model, tokenizer = TableBigram(FIXTURE["table"]), CharTokenizer(FIXTURE["chars"])
    result = run_task(model, tokenizer, _fixture_task(), shared=shared)
    for got, want in zip(result.items, FIXTURE["items"]):
        np.testing.assert_allclose(got["logprobs"], want["logprobs"], rtol=0, atol=1e-12)
        assert got["is_greedy"] == want["is_greedy"]
        assert (got["acc"], got["acc_norm"]) == (want["acc"], want["acc_norm"])
    accs = [item["acc"] for item in FIXTURE["items"]]
    assert result.metrics["acc"] == (pytest.approx(sum(accs) / len(accs)),
                                     pytest.approx(stderr_of_mean(accs)))
    assert result.metrics["acc"][0] != result.metrics["acc_norm"][0]  # the fixture differs


def test_limit_and_progress():
    model, tokenizer = TableBigram(FIXTURE["table"]), CharTokenizer(FIXTURE["chars"])
    seen = []
    result = run_task(model, tokenizer, _fixture_task(), limit=3, shared=False,
                      progress=lambda done, total, s: seen.append((done, total)))
    assert len(result.items) == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    seen.clear()  # shared scoring runs questions together: one report per chunk of them
    result = run_task(model, tokenizer, _fixture_task(), limit=3,
                      progress=lambda done, total, s: seen.append((done, total)))
    assert len(result.items) == 3 and seen == [(3, 3)]
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            run_task(model, tokenizer, _fixture_task(), limit=bad)


def test_the_table_has_error_bars_and_the_paired_difference():
    tokenizer = CharTokenizer(FIXTURE["chars"])
    good = run_task(TableBigram(FIXTURE["table"]), tokenizer, _fixture_task(), model_name="A")
    flat = run_task(TableBigram(np.ones((6, 6))), tokenizer, _fixture_task(), model_name="B")
    markdown = results_table([good, flat])
    header, rule, acc, acc_norm = markdown.splitlines()
    assert header.split("|")[1:-1] == [" task    ", " metric   ", " A               ",
                                       " B               ", " A - B [95% CI]             "]
    a = good.metrics["acc"]
    assert f"{a[0]:.4f} ± {a[1]:.4f}" in acc
    # The uniform model gives a choice of n characters n + 1 times ln 6 (with the space), so
    # acc picks the first shortest choice.
    b_acc = np.mean([item["gold"] == int(np.argmin([len(c) for c in item["choices"]]))
                     for item in FIXTURE["items"]])
    assert flat.metrics["acc"][0] == pytest.approx(b_acc)
    assert f"{a[0] - b_acc:+.4f} [" in acc
    rows = list(csv.reader(io.StringIO(results_table([good, flat], "csv"))))
    assert rows[0][:2] == ["task", "metric"] and len(rows) == 3
    data = json.loads(results_table([good, flat], "json"))
    assert data == results_json([good, flat]) and len(data["results"][0]["items"]) == 12
    with pytest.raises(ValueError, match="unknown table format"):
        results_table([good], "html")


def test_generate_and_perplexity_tasks_run():
    tokenizer = CharTokenizer(" 0123456789?:QWAaehinostuw\n+-")
    V = tokenizer.vocab_size
    gen = Task("sums", "generate", [{"prompt": "1 + 1", "answer": "2"}], stop=["\n"],
               extract="last_number", max_new_tokens=3)
    result = run_task(TableBigram(np.ones((V, V))), tokenizer, gen)
    # A uniform model writes its first id (" ") every time: no number, exact match 0.
    assert result.items[0]["generated"] == "   " and result.metrics["exact_match"][0] == 0.0
    text = Task("doc", "perplexity", [{"text": "ab ab"}])
    tokenizer = CharTokenizer(" ab")
    res = run_task(TableBigram(np.ones((3, 3))), tokenizer, text, window=2)
    # Uniform over 3 ids: 4 scored tokens ("b ab", 4 bytes) of log2(3) bits each.
    assert res.metrics["bits_per_byte"][0] == pytest.approx(math.log2(3))
    assert res.metrics["token_perplexity"][0] == pytest.approx(3.0)
    assert math.isnan(res.metrics["bits_per_byte"][1])
    with pytest.raises(ValueError, match="give the rolling window"):
        run_task(TableBigram(np.ones((3, 3))), tokenizer, text)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A neural bigram over the corpus' characters, untrained (uniform-ish), saved."""
    tokenizer = CharTokenizer.from_text(embedded_corpus())
    args = {"vocab_size": tokenizer.vocab_size}
    model = build_model("bigram", args)
    out = tmp_path_factory.mktemp("ckpt") / "bigram"
    save_checkpoint(out, model_family="bigram", model_args=args, model_state=model.state_dict(),
                    tokenizer=tokenizer)
    return str(out)


def test_the_evaluate_command(checkpoint, tmp_path, capsys):
    task = tmp_path / "mine.jsonl"
    task.write_text(json.dumps({"context": "The for", "choices": ["statement", "loop"],
                                "gold": 0}) + "\n", encoding="utf-8")
    output = tmp_path / "results.json"
    code = main(["evaluate", "--model", checkpoint, "--model", checkpoint + "/",
                 "--tasks", f"arithmetic,{task},corpus_bpb", "--limit", "2",
                 "--output", str(output)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"^\| arithmetic +\| exact_match +\| 0\.0000 ± 0\.0000 ", out, re.M)
    assert "corpus_bpb" in out and "mine" in out and "ETA" in err
    data = json.loads(output.read_text(encoding="utf-8"))
    assert {r["task"] for r in data["results"]} == {"arithmetic", "mine", "corpus_bpb"}
    assert len(data["results"][0]["items"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "hellaswag"], "unknown task 'hellaswag'; built-in tasks: next_sentence"),
    (["--tasks", " , "], "--tasks is empty"),
    (["--tasks", "missing/task.jsonl"], "task.jsonl"),
])
def test_the_evaluate_command_refuses_bad_input(checkpoint, capsys, argv, message):
    assert main(["evaluate", "--model", checkpoint, *argv]) == 2
    assert message in capsys.readouterr().err


def test_limit_must_be_positive(checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", checkpoint, "--tasks", "arithmetic", "--limit", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
