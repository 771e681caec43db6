"""Task files: the JSONL format a person writes by hand, its validation line by line, the
template and the few-shot draw; and the built-in tasks."""
from __future__ import annotations

import json

import pytest

from numpylm.evaluation.builtin import (BUILTIN_TASKS, arithmetic, identifier_cloze,
                                       next_sentence)
from numpylm.evaluation.tasks import Task, load_task, read_task_file
from numpylm.io.errors import FileFormatError


def write(path, *lines) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
                    encoding="utf-8")
    return str(path)


MC = [{"context": f"Q{i}", "choices": [f"a{i}", f"b{i}"], "gold": i % 2,
       "split": "train" if i < 5 else "test"} for i in range(8)]


def test_kinds_are_read_from_the_fields(tmp_path):
    mc = read_task_file(write(tmp_path / "mc.jsonl", *MC))
    assert mc.kind == "multiple_choice" and mc.name == "mc" and len(mc.split("test")) == 3
    gen = read_task_file(write(tmp_path / "gen.jsonl", {"prompt": "2+3=", "answer": "5",
                                                       "stop": "\n"}))
    assert gen.kind == "generate" and gen.split("test")[0]["stop"] == "\n"
    ppl = read_task_file(write(tmp_path / "ppl.jsonl", {"text": "some words"}, "",
                               {"text": "more"}))
    assert ppl.kind == "perplexity" and len(ppl.items) == 2


def test_header_template_and_fewshot(tmp_path):
    header = {"task": {"name": "quiz", "template": "Question: {context}\nAnswer:",
                       "description": "Quiz.\n\n", "what": "a test quiz"}}
    task = read_task_file(write(tmp_path / "q.jsonl", header, *MC))
    assert task.name == "quiz" and task.context(0) == "Quiz.\n\nQuestion: Q5\nAnswer:"
    two = task.context(1, num_fewshot=2, seed=7)
    # Two examples from the train split, each "template + delimiter + right choice".
    examples = two[len("Quiz.\n\n"):].split("\n\n")
    assert len(examples) == 3 and examples[-1] == "Question: Q6\nAnswer:"
    for ex in examples[:2]:
        i = int(ex.split("Question: Q")[1].split("\n")[0])
        assert i < 5 and ex == f"Question: Q{i}\nAnswer: {MC[i]['choices'][MC[i]['gold']]}"
    # Seeded per item: the same call repeats; the draw does not depend on the other items.
    assert task.context(1, 2, seed=7) == two
    assert {task.context(1, 2, seed=s) for s in range(10)} != {two}
    with pytest.raises(ValueError, match="has 5"):
        task.context(0, num_fewshot=6)


def test_fewshot_from_the_eval_split_never_shows_the_item_itself():
    items = [{"context": f"Q{i}", "choices": ["x", "y"], "gold": 0} for i in range(3)]
    task = Task("t", "multiple_choice", items, fewshot_split="test")
    for i in range(3):
        shown = task.context(i, num_fewshot=2).split("\n\n")
        assert shown[-1] == f"Q{i}" and all(f"Q{i} " not in s for s in shown[:-1])


@pytest.mark.parametrize("line, message", [
    ('{"context": "c", "choices": ["a", "b"], "gold": 2}', "gold 2 is outside the 2 choices"),
    ('{"context": "c", "choices": [], "gold": 0}', "non-empty list"),
    ('{"context": "c", "choices": ["a", ""], "gold": 0}', "non-empty string"),
    ('{"context": "c", "choices": ["a"], "gold": true}', "gold must be an integer"),
    ('{"context": 3, "choices": ["a"], "gold": 0}', "context must be a string"),
    ('{"context": "c", "choices": ["a"]}', "missing gold"),
    ('{"context": "c", "choices": ["a"], "gold": 0', "not valid JSON"),
    ('[1, 2]', "JSON object"),
])
def test_a_bad_line_names_the_file_and_the_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", MC[0], MC[1], line)
    with pytest.raises(FileFormatError, match=message) as err:
        read_task_file(path)
    assert str(err.value).startswith(f"{path}: line 3: ")


def test_other_bad_files(tmp_path):
    with pytest.raises(FileFormatError, match="no items"):
        read_task_file(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(FileFormatError, match="cannot tell the task's kind"):
        read_task_file(write(tmp_path / "odd.jsonl", {"question": "?"}))
    with pytest.raises(FileFormatError, match="unknown options \\['temperature'\\]"):
        read_task_file(write(tmp_path / "h.jsonl", {"task": {"temperature": 1}}, MC[0]))
    with pytest.raises(FileFormatError, match="line 2: .*prompt, answer"):
        read_task_file(write(tmp_path / "mix.jsonl", {"prompt": "p", "answer": "a"},
                             {"context": "c", "choices": ["a"], "gold": 0}))
    with pytest.raises(FileFormatError, match="no items in its eval split"):
        read_task_file(write(tmp_path / "train.jsonl", MC[0]))
    with pytest.raises(FileFormatError, match="unknown answer extractor"):
        read_task_file(write(tmp_path / "x.jsonl", {"task": {"extract": "best"}},
                             {"prompt": "p", "answer": "a"}))
    task = read_task_file(write(tmp_path / "tpl.jsonl", {"task": {"template": "{question}"}},
                                *MC))
    with pytest.raises(ValueError, match="does not fit the item's fields"):
        task.context(0)


def test_an_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="next_sentence, identifier_cloze, arithmetic"):
        load_task("hellaswag", BUILTIN_TASKS)
    assert load_task("arithmetic", BUILTIN_TASKS).kind == "generate"


def test_builtin_tasks_are_deterministic_and_answerable():
    for name, make in BUILTIN_TASKS.items():
        a, b = make(), make()
        assert a.items == b.items and a.what and len(a.split("test")) >= 10, name
        if a.kind == "multiple_choice":
            for item in a.items:  # four different choices, the gold one the true text
                assert len(set(item["choices"])) == 4
    # The arithmetic answers are right by construction.
    for item in arithmetic().items:
        x, op, y = item["prompt"][len("What is "):-1].split()
        assert int(item["answer"]) == (int(x) + int(y) if op == "+" else int(x) - int(y))


def test_next_sentence_choices_can_be_kept_short_for_a_small_window():
    task = next_sentence(longest=63)
    assert len(task.split("test")) >= 10
    assert all(len(c) <= 63 for item in task.items for c in item["choices"])
    assert any(len(item["context"]) > 63 for item in task.items)  # contexts are not cut
    assert len(next_sentence().split("test")) > len(task.split("test"))


@pytest.mark.parametrize("make", [next_sentence, identifier_cloze])
def test_a_text_too_short_for_a_built_in_task_says_so(make):
    with pytest.raises(ValueError, match="too short"):
        make("A short text. It has two sentences.\n" * 3)
