"""Fine-tuning data: JSONL files checked line by line, and the built-in tasks' checkers."""
import json

import pytest

from numpylm.io.errors import FileFormatError
from numpylm.tuning.data import (TASKS, get_task, load_conversations, load_preferences,
                                 make_pair, task_conversations, task_preferences)


def write(path, lines):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_conversations_load(tmp_path):
    convs = load_conversations(write(tmp_path / "c.jsonl", [GOOD, "", GOOD]))
    assert len(convs) == 2 and convs[0][1] == {"role": "assistant", "content": "hello"}


@pytest.mark.parametrize("bad, words", [
    ("{oops", "not valid JSON"), ("[1, 2]", "JSON object"), ({"msgs": []}, "no 'messages'"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "assistant", "content": 3}]}, "content"),
])
def test_a_bad_line_names_file_and_line(tmp_path, bad, words):
    path = write(tmp_path / "c.jsonl", [GOOD, GOOD, bad])
    with pytest.raises(FileFormatError, match=words) as info:
        load_conversations(path)
    assert info.value.field == "line 3" and "c.jsonl" in str(info.value)


def test_preferences_load_strings_and_messages(tmp_path):
    path = write(tmp_path / "p.jsonl", [
        {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "chosen": [{"role": "assistant", "content": "hi"}], "rejected": "hello there"}])
    pairs = load_preferences(path)
    assert pairs[0].prompt == ({"role": "user", "content": "2+2="},)
    assert (pairs[1].chosen, pairs[1].rejected) == ("hi", "hello there")
    assert pairs[1].prompt[0]["role"] == "system"


@pytest.mark.parametrize("bad, words", [
    ({"prompt": "q", "chosen": "a"}, "rejected"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "prompt"),
])
def test_bad_preference_lines(tmp_path, bad, words):
    with pytest.raises(FileFormatError, match=words) as info:
        load_preferences(write(tmp_path / "p.jsonl", [bad]))
    assert info.value.field == "line 1"


def test_task_checkers_accept_the_answer_and_refuse_others():
    assert get_task("addition").check("17+25=", "42")
    assert not get_task("addition").check("17+25=", "43")
    assert get_task("reverse").check("reverse: cat dog sun", "sun dog cat")
    assert not get_task("reverse").check("reverse: cat dog sun", "cat dog sun")
    assert get_task("sort").check("sort: owl cat ink", "cat ink owl")
    assert not get_task("sort").check("sort: owl cat ink", "owl cat ink")
    for task in TASKS.values():  # the generator's answers pass its own checker
        for q, a in task.examples(20, seed=3):
            assert task.check(q, a), (task.name, q, a)
    with pytest.raises(ValueError, match="built-in tasks"):
        get_task("chess")


def test_tasks_are_deterministic_and_preferences_prefer_the_right_answer():
    assert task_conversations("sort", 5, seed=1) == task_conversations("sort", 5, seed=1)
    assert task_conversations("sort", 5, seed=1) != task_conversations("sort", 5, seed=2)
    for name in TASKS:
        for pair in task_preferences(name, 10, seed=0):
            q = pair.prompt[-1]["content"]
            task = get_task(name)
            assert task.check(q, pair.chosen) and not task.check(q, pair.rejected)
    with pytest.raises(ValueError, match="identical"):
        make_pair("q", "x", "x")
