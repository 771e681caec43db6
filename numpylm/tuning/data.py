"""The data of fine-tuning, part 4 of the guide: conversations, preference pairs, and small tasks
whose right answer a program can check.

Two file formats, one JSON object a line (JSONL), the ones the common tools read:

    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"}

(in a preference pair, each field is a string or a list of messages). Every line is checked
as it is read; a bad one is a `FileFormatError` naming the file and the line, because a
fine-tuning run that silently skips or misreads examples is worse than one that stops.

The built-in tasks (`TASKS`) are generated in code from a seed, so no data is downloaded,
and each has a checker: before/after accuracy is then an exact number, not an opinion.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from numpylm.chat import check_messages
from numpylm.io.errors import FileFormatError
from numpylm.tokenizers.char import CharTokenizer

__all__ = ["PreferencePair", "Task", "TASKS", "TaskTokenizer", "get_task",
           "make_pair", "load_conversations",
           "load_preferences", "check_conversation", "task_conversations", "task_preferences"]

Messages = list[dict[str, Any]]


def check_conversation(messages: Any) -> Messages:
    """Validated messages that include at least one assistant turn (else nothing to learn)."""
    messages = check_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn: there is nothing to learn "
                         "from it (the loss counts assistant tokens only)")
    return messages


def _lines(path: str | os.PathLike[str]):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(path, f"not UTF-8 text: {e}")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FileFormatError(path, f"not valid JSON: {e.msg}", field=f"line {number}")
        if not isinstance(record, dict):
            raise FileFormatError(path, f"must be a JSON object, got {type(record).__name__}",
                                  field=f"line {number}")
        yield number, record


def load_conversations(path: str | os.PathLike[str]) -> list[Messages]:
    """The conversations of a `{"messages": [...]}` JSONL file."""
    out = []
    for number, record in _lines(path):
        if "messages" not in record:
            raise FileFormatError(path, "has no 'messages' field", field=f"line {number}")
        try:
            out.append(check_conversation(record["messages"]))
        except ValueError as e:
            raise FileFormatError(path, str(e), field=f"line {number}")
    if not out:
        raise FileFormatError(path, "holds no conversations")
    return out


@dataclass(frozen=True)
class PreferencePair:
    """A prompt (messages ending with a user turn) and two assistant answers, one preferred."""

    prompt: tuple[dict[str, Any], ...]
    chosen: str
    rejected: str


def _as_prompt(value: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        return ({"role": "user", "content": value},)
    messages = check_messages(value)
    if not messages or messages[-1]["role"] == "assistant":
        raise ValueError("a prompt given as messages must be non-empty and not end with an "
                         "assistant turn")
    return tuple(messages)


def _as_answer(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    messages = check_messages(value)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise ValueError(f"{name} given as messages must be one assistant message")
    return messages[0]["content"]


def make_pair(prompt: Any, chosen: Any, rejected: Any) -> PreferencePair:
    pair = PreferencePair(_as_prompt(prompt), _as_answer(chosen, "chosen"),
                          _as_answer(rejected, "rejected"))
    if pair.chosen == pair.rejected:
        raise ValueError("chosen and rejected are identical: the pair expresses no preference")
    return pair


def load_preferences(path: str | os.PathLike[str]) -> list[PreferencePair]:
    """The pairs of a `{"prompt", "chosen", "rejected"}` JSONL file."""
    out = []
    for number, record in _lines(path):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise FileFormatError(path, f"lacks field(s) {missing}", field=f"line {number}")
        try:
            out.append(make_pair(record["prompt"], record["chosen"], record["rejected"]))
        except ValueError as e:
            raise FileFormatError(path, str(e), field=f"line {number}")
    if not out:
        raise FileFormatError(path, "holds no preference pairs")
    return out


# ---- built-in tasks ------------------------------------------------------------------------

WORDS = ("cat", "dog", "sun", "red", "sea", "owl", "fig", "ink", "map", "box", "cup", "hat",
         "jam", "kit", "log", "net", "pen", "rug", "toy", "van")


@dataclass(frozen=True)
class Task:
    """A task: `make(rng) -> (question, answer)` and `check(question, reply) -> bool`."""

    name: str
    description: str
    make: Callable[[np.random.Generator], tuple[str, str]]
    check: Callable[[str, str], bool]

    def examples(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        rng = np.random.default_rng(seed)
        return [self.make(rng) for _ in range(n)]


def _words(rng: np.random.Generator, lo: int = 3, hi: int = 5) -> list[str]:
    return [WORDS[i] for i in rng.choice(len(WORDS), size=int(rng.integers(lo, hi + 1)),
                                         replace=False)]


def _addition(rng):
    a, b = (int(x) for x in rng.integers(10, 100, size=2))
    return f"{a}+{b}=", str(a + b)


def _check_addition(question, reply):
    a, b = question.rstrip("=").split("+")
    return reply.strip() == str(int(a) + int(b))


def _reverse(rng):
    words = _words(rng)
    return "reverse: " + " ".join(words), " ".join(reversed(words))


def _sort(rng):
    words = _words(rng)
    return "sort: " + " ".join(words), " ".join(sorted(words))


def _copy(rng):
    words = _words(rng)
    return "copy: " + " ".join(words), " ".join(words)


def _rule(fn):
    def check(question, reply):
        words = question.split(": ", 1)[1].split()
        return reply.strip() == " ".join(fn(words))
    return check


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("addition", "two-digit addition, 'a+b=' -> the sum", _addition, _check_addition),
    Task("reverse", "reverse the order of 3-5 words", _reverse, _rule(lambda w: w[::-1])),
    Task("sort", "sort 3-5 words alphabetically", _sort, _rule(sorted)),
    Task("copy", "repeat 3-5 words as given", _copy, _rule(list)),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the built-in tasks are {sorted(TASKS)}")
    return TASKS[name]


def task_conversations(task: Task | str, n: int, seed: int = 0,
                       system: str | None = None) -> list[Messages]:
    """n conversations (optional system turn, user question, assistant answer)."""
    task = get_task(task) if isinstance(task, str) else task
    head = [{"role": "system", "content": system}] if system else []
    return [head + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            for q, a in task.examples(n, seed)]


def task_preferences(task: Task | str, n: int, seed: int = 0) -> list[PreferencePair]:
    """n pairs: the right answer chosen, a wrong one rejected (a near miss: for words, the
    words in their given order or another shuffle; for sums, off by one digit)."""
    task = get_task(task) if isinstance(task, str) else task
    rng = np.random.default_rng(seed + 7919)
    pairs = []
    for q, a in task.examples(n, seed):
        if task.name == "addition":
            wrong = str(int(a) + int(rng.choice([-10, -1, 1, 10])))
        else:
            words = a.split()
            wrong = a
            while wrong == a:
                wrong = " ".join(rng.permutation(words))
        pairs.append(make_pair(q, a, wrong))
    return pairs


class ChatCharTokenizer(CharTokenizer):
    """A character tokenizer that also gives each id's bytes (what `numpylm.chat` needs to
    place the assistant mask), so a char model trained here can be fine-tuned on chats."""

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes of one id."""
        return self.decode([token_id]).encode("utf-8")


def chat_tokenizer(tokenizer: Any) -> Any:
    """`tokenizer` itself, or, for a plain `CharTokenizer` (a numpylm checkpoint's), the same
    characters as a `ChatCharTokenizer`."""
    if type(tokenizer) is CharTokenizer:
        return ChatCharTokenizer.from_string(tokenizer.to_string())
    return tokenizer


class TaskTokenizer(ChatCharTokenizer):
    """A character tokenizer over everything the built-in tasks and ChatML write, for models
    trained here from scratch on them (ids are characters: the chat markers are spelled out)."""

    ALPHABET = "".join(sorted(set("".join(WORDS) + "<|>_imstartendusrsystemassistant\n"
                                  "reversortcopy: 0123456789+=")))

    def __init__(self) -> None:
        super().__init__(self.ALPHABET)
