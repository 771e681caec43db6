"""numpylm's multiple-choice log-likelihoods against lm-evaluation-harness's HF backend: per-item
values stored once from `HFLM.loglikelihood` (tests/fixtures/eval_make_lm_eval_fixture.py) for
a small random Llama, checked without any peer installed; and, where lm_eval, transformers and
torch are installed, the same comparison live, on MMLU's dev questions too."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from numpylm.evaluation.harness import run_task
from numpylm.evaluation.tasks import Task
from numpylm.io import save_safetensors
from numpylm.models.pretrained import load_pretrained

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = json.loads((FIXTURES / "eval_lm_eval_fixture.json").read_text(encoding="utf-8"))
_spec = importlib.util.spec_from_file_location("eval_make_lm_eval_fixture",
                                               FIXTURES / "eval_make_lm_eval_fixture.py")
MAKER = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(MAKER)  # numpy only at import: its peers are imported when called


def fixture_model_dir(directory: Path) -> Path:
    """The fixture's random Llama and tokenizer, written in HF's layout without torch."""
    (directory / "config.json").write_text(json.dumps(FIXTURE["config"]), encoding="utf-8")
    save_safetensors(MAKER.weights(FIXTURE["tensors"], FIXTURE["seed"]),
                     directory / "model.safetensors")
    (directory / "tokenizer.json").write_text(json.dumps(FIXTURE["tokenizer"]),
                                              encoding="utf-8")
    return directory


def as_task(items: list[dict]) -> Task:
    return Task("lm_eval_items", "multiple_choice",
                [{"context": i["context"], "choices": i["choices"], "gold": i["gold"]}
                 for i in items])


@pytest.mark.parametrize("shared", [True, False])
def test_per_item_logliks_match_lm_evals_stored_values(tmp_path, shared):
    model, tokenizer = load_pretrained(fixture_model_dir(tmp_path))
    result = run_task(model, tokenizer, as_task(FIXTURE["items"]), shared=shared)
    for ours, theirs in zip(result.items, FIXTURE["items"]):
        np.testing.assert_allclose(ours["logprobs"], theirs["logprobs"], rtol=0, atol=1e-3,
                                   err_msg=theirs["context"])
        assert ours["is_greedy"] == theirs["is_greedy"]
        assert ours["acc"] == float(np.argmax(theirs["logprobs"]) == theirs["gold"])
    worst = max(np.abs(np.subtract(a["logprobs"], b["logprobs"])).max()
                for a, b in zip(result.items, FIXTURE["items"]))
    assert worst < 1e-4  # float32 on both sides: far inside the 1e-3 target


def test_the_fixture_covers_the_tokenisation_cases():
    contexts = [i["context"] for i in FIXTURE["items"]]
    assert any(c.endswith(" ") for c in contexts)          # the space moves to the choice
    assert any(c.endswith("\nAnswer:") for c in contexts)  # MMLU's zero-shot layout
    # The stored values differ between choices, so a wrong split would show.
    assert all(len(set(i["logprobs"])) == len(i["choices"]) for i in FIXTURE["items"])


def test_a_changed_model_is_caught(tmp_path):
    """The comparison can fail: one weight changed moves the log-likelihoods past 1e-3."""
    model, tokenizer = load_pretrained(fixture_model_dir(tmp_path))
    model.model.norm.weight.data[:] *= 1.5
    result = run_task(model, tokenizer, as_task(FIXTURE["items"]))
    worst = max(np.abs(np.subtract(a["logprobs"], b["logprobs"])).max()
                for a, b in zip(result.items, FIXTURE["items"]))
    assert worst > 1e-3


def test_live_against_hflm_on_a_tiny_random_model(tmp_path):
    for peer in ("transformers", "tokenizers", "lm_eval"):
        pytest.importorskip(peer)
    torch = pytest.importorskip("torch")
    from numpylm.evaluation.builtin import BUILTIN_TASKS

    MAKER.save_hf_model(tmp_path, seed=5)
    items = [{"context": c, "choices": ch, "gold": g} for c, ch, g in MAKER.ITEMS]
    if "mmlu_dev" in BUILTIN_TASKS:
        items += [{k: i[k] for k in ("context", "choices", "gold")}
                  for i in BUILTIN_TASKS["mmlu_dev"]().split("test")[::40]]
    requests = [(i["context"], " " + c) for i in items for c in i["choices"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine, two threads run this tiny model 20x slower
    try:
        theirs = MAKER.hflm_loglikelihoods(tmp_path, requests)
    finally:
        torch.set_num_threads(threads)
    model, tokenizer = load_pretrained(tmp_path)
    result = run_task(model, tokenizer, as_task(items))
    ours = [(ll, g) for item in result.items
            for ll, g in zip(item["logprobs"], item["is_greedy"])]
    np.testing.assert_allclose([x for x, _ in ours], [x for x, _ in theirs], rtol=0, atol=1e-3)
    assert [g for _, g in ours] == [g for _, g in theirs]
