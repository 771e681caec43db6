"""MMLU's dev questions from lm_eval's bundled chain-of-thought prompts: the parse of both
option layouts and of the file's known irregularities, errors naming the subject, the prompt
against lm-eval's own template; where lm_eval is installed, every subject of the real file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from numpylm.evaluation import builtin
from numpylm.evaluation.mmlu import (FIVE_OPTIONS, find_mmlu_file, mmlu_dev, mmlu_prompt,
                                     parse_cot_prompts)
from numpylm.io.errors import FileFormatError

HEAD = "The following are multiple choice questions (with answers) about {}.\n\n"
INLINE = ("Q: What is 2 + 2?\n(A) 3 (B) 4 (C) 5 (D) 22\n"
          "A: Let's think step by step. Two and two make four, not (A). The answer is (B).")
PER_LINE = ("Q: Which holds?\nI. x\nII. y\n(A) I only\n(B) II only\n(C) both\n  of them\n"
            "(D) neither\nA: Let's think step by step. The answer is (C).")
FIVE = "Q: Lines?\n(A) 4 (B) 3 (C) 6 (D) 24 (E) 8\nA: Let's think step by step. The answer is (E)."


def prompts(**subjects: list[str]) -> dict:
    return {s: HEAD.format(s.replace("_", " ")) + "\n\n".join(blocks) + "\n\n"
            for s, blocks in subjects.items()}


def test_both_option_layouts_and_a_five_option_question():
    data = prompts(toy_math=[INLINE, PER_LINE])
    data["toy_chem"] = "\n" + HEAD.format("toy chem") + FIVE + "\n\n" + INLINE  # leading blank
    items, left_out = parse_cot_prompts(data)
    assert left_out == 1
    assert [(i["subject"], i["gold"]) for i in items] == [("toy_math", 1), ("toy_math", 2),
                                                         ("toy_chem", 1)]
    assert items[0]["question"] == "What is 2 + 2?"
    assert items[0]["options"] == ["3", "4", "5", "22"]
    assert items[1]["question"] == "Which holds?\nI. x\nII. y"
    assert items[1]["options"] == ["I only", "II only", "both\n  of them", "neither"]


@pytest.mark.parametrize("block, says", [
    ("Q: Why?\n(A) a (B) b (C) c (D) d\nA: Let's think step by step. No idea.", "The answer is"),
    ("Q: Why?\n(A) a (C) b (B) c (D) d\nA: The answer is (A).", "lettered 'ACBD'"),
    ("Q: Why?\n(A) a (B) b (C) c\nA: The answer is (A).", "lettered 'ABC'"),
    ("Q: Why? a, b, c or d\nA: The answer is (A).", "no line starting '(A) '"),
    ("Q: Why?\n(A) a (B) b (C) c (D) d\nThe answer is (A).", "no line starting 'A: '"),
    ("Q: Why?\n(A) a (B) b (C) c (D) d\nA: The answer is (F).", "not one of A-D"),
])
def test_a_changed_format_is_an_error_naming_the_subject(block, says):
    data = prompts(good_one=[INLINE], bad_one=[INLINE, block])
    with pytest.raises(FileFormatError, match=re.escape(says)) as err:
        parse_cot_prompts(data, "cot.json")
    assert str(err.value).startswith("cot.json: bad_one: question 2: ")


def test_a_wrong_header_or_shape_is_an_error_naming_the_subject():
    with pytest.raises(FileFormatError, match="nutrition: the prompt does not open"):
        parse_cot_prompts({"nutrition": "Questions about food.\n\n" + INLINE})
    with pytest.raises(FileFormatError, match="anatomy: 6 questions"):
        parse_cot_prompts(prompts(anatomy=[INLINE] * 6))
    with pytest.raises(FileFormatError, match="mapping subjects"):
        parse_cot_prompts(["not", "a", "dict"])


def test_the_prompt_is_lm_evals_mmlu_default_format():
    expected = ("The following are multiple choice questions (with answers) about high school "
                "physics.\n\nWhat is g?\nA. 9.8 m/s^2\nB. 1 m/s\nC. 0\nD. 42\nAnswer:")
    assert mmlu_prompt("high_school_physics", "  What is g?\n",
                       ["9.8 m/s^2", "1 m/s", "0", "42"]) == expected
    with pytest.raises(ValueError, match="4 options, got 3"):
        mmlu_prompt("anatomy", "Q", ["a", "b", "c"])


def test_a_task_file_of_our_own_scores_letters(tmp_path):
    path = tmp_path / "cot.json"
    path.write_text(json.dumps(prompts(toy_math=[INLINE, PER_LINE])), encoding="utf-8")
    task = mmlu_dev(path)
    assert task.kind == "multiple_choice" and task.target_delimiter == " "
    item = task.split("test")[0]
    assert item["choices"] == ["A", "B", "C", "D"] and item["gold"] == 1
    assert task.context(0).endswith("What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")
    with pytest.raises(ValueError, match="few-shot"):
        task.context(0, num_fewshot=1)  # zero-shot only: there is no other split
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        mmlu_dev(path)


def test_without_lm_eval_the_task_is_not_listed_and_asking_says_how(monkeypatch):
    monkeypatch.delitem(builtin.BUILTIN_TASKS, "mmlu_dev", raising=False)
    with pytest.raises(ValueError, match="pip install lm_eval"):
        builtin.get_task("mmlu_dev")
    with pytest.raises(ValueError, match="built-in tasks: next_sentence"):
        builtin.get_task("mmlu_test")
    assert builtin.get_task("arithmetic").kind == "generate"


needs_lm_eval = pytest.mark.skipif(find_mmlu_file() is None,
                                   reason="lm_eval (with its bundled MMLU prompts) not installed")


@needs_lm_eval
def test_every_subject_of_the_bundled_file_parses():
    data = json.loads(find_mmlu_file().read_text(encoding="utf-8"))
    items, left_out = parse_cot_prompts(data)
    assert len(data) == 57 and left_out == FIVE_OPTIONS
    assert {i["subject"] for i in items} == set(data)
    assert len(items) == 57 * 5 - 3 - FIVE_OPTIONS  # three subjects hold four questions
    for item in items:
        assert len(item["options"]) == 4 and 0 <= item["gold"] < 4, item["subject"]
        assert all(o.strip() == o and o for o in item["options"])
    assert "mmlu_dev" in builtin.BUILTIN_TASKS
    assert len(builtin.get_task("mmlu_dev").split("test")) == len(items)


@needs_lm_eval
def test_the_prompt_matches_lm_evals_own_template():
    jinja2 = pytest.importorskip("jinja2")
    yaml = pytest.importorskip("yaml")
    mmlu = Path(find_mmlu_file()).parents[1]
    config = yaml.safe_load((mmlu / "default" / "_default_template_yaml").read_text())
    subject = yaml.safe_load((mmlu / "default" / "mmlu_anatomy.yaml").read_text())
    assert config["doc_to_choice"] == ["A", "B", "C", "D"] and config["output_type"] == \
        "multiple_choice"
    task = builtin.get_task("mmlu_dev")
    item = next(i for i in task.split("test") if i["subject"] == "anatomy")
    doc = {"question": item["question"], "choices": item["options"]}
    theirs = subject["description"] + jinja2.Template(config["doc_to_text"]).render(**doc)
    assert item["context"] == theirs
