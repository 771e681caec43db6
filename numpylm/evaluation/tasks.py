"""Benchmark tasks as files a person can write by hand, part 4 of the guide: what a task is, and
how a question becomes the exact text the model reads.

A task file is JSON Lines: one JSON object per line, of one of three kinds.

    {"context": "The capital of France is", "choices": ["Paris", "Rome"], "gold": 0}
    {"prompt": "What is 2 + 3?", "answer": "5", "stop": ["\\n"]}
    {"text": "A long document to score with rolling bits per byte ..."}

- `multiple_choice`: `context` (str), `choices` (a non-empty list of non-empty str), `gold`
  (the index of the right choice); scored by log-likelihood (`loglikelihood.py`).
- `generate`: `prompt` (str), `answer` (str), optional `stop` (a str or list of str); the
  model writes, the answer is extracted and compared (`generative.py`).
- `perplexity`: `text` (a non-empty str); scored by rolling log-likelihood (`rolling.py`).

Every line may carry `"split"` (default `"test"`) and any other fields its template uses.
An optional first line `{"task": {...}}` sets the task's options:

- `name`, `kind` (else the first item's fields decide), `what` (one sentence: what it measures);
- `template`: a `str.format` string over the item's fields, default `"{context}"` or
  `"{prompt}"`, e.g. `"Question: {question}\\nAnswer:"`;
- `description`: text put before everything (default "");
- `target_delimiter` (default " ") between a rendered question and its answer, and
  `fewshot_delimiter` (default "\\n\\n") between examples, as lm-evaluation-harness has them;
- `eval_split` (default "test") and `fewshot_split` (default "train"): which lines are
  scored and which are drawn as few-shot examples;
- for `generate`: `stop` (default ["\\n\\n"]), `extract` (default "first_line", see
  `generative.extract_answer`), `max_new_tokens` (default 32).

With k few-shot examples the model reads (`Task.context`):

    description + ex_1 + fewshot_delimiter + ... + ex_k + fewshot_delimiter + template(item)

where ex_i = template(example_i) + target_delimiter + its right choice or answer. The k
examples are drawn without replacement from the few-shot split by a generator seeded with
(seed, item index), never the item itself, so item i's prompt does not change with --limit.
A malformed line is a `FileFormatError` naming the file and the line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from numpylm.evaluation.generative import check_extractor
from numpylm.io.errors import FileFormatError
from numpylm.io.text import read_utf8

__all__ = ["KINDS", "Task", "check_item", "load_task", "read_task_file"]

KINDS = ("multiple_choice", "generate", "perplexity")
_REQUIRED = {"multiple_choice": ("context", "choices", "gold"),
             "generate": ("prompt", "answer"), "perplexity": ("text",)}
_OPTIONS = {"name", "kind", "what", "template", "description", "target_delimiter",
            "fewshot_delimiter", "eval_split", "fewshot_split", "stop", "extract",
            "max_new_tokens"}


def _kind_of(item: dict) -> str | None:
    for kind in KINDS:
        if all(key in item for key in _REQUIRED[kind]):
            return kind
    return None


def _stops(value: Any, what: str) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"{what} must be a non-empty string or a list of them, got {value!r}")
    return stops


def check_item(kind: str, item: Any) -> dict:
    """The item (a dict) if it is a valid item of `kind`, else a ValueError saying why."""
    if not isinstance(item, dict):
        raise ValueError(f"an item must be a JSON object, got {type(item).__name__}")
    missing = [k for k in _REQUIRED[kind] if k not in item]
    if missing:
        raise ValueError(f"a {kind} item needs {', '.join(_REQUIRED[kind])}; "
                         f"missing {', '.join(missing)}")
    if not isinstance(item.get("split", "test"), str):
        raise ValueError(f"split must be a string, got {item['split']!r}")
    if kind == "multiple_choice":
        if not isinstance(item["context"], str):
            raise ValueError(f"context must be a string, got {item['context']!r}")
        choices = item["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"choices must be a non-empty list of strings, got {choices!r}")
        if not all(isinstance(c, str) and c for c in choices):
            raise ValueError(f"every choice must be a non-empty string, got {choices!r}")
        gold = item["gold"]
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise ValueError(f"gold must be an integer index into choices, got {gold!r}")
        if not 0 <= gold < len(choices):
            raise ValueError(f"gold {gold} is outside the {len(choices)} choices "
                             f"(0 to {len(choices) - 1})")
    elif kind == "generate":
        for key in ("prompt", "answer"):
            if not isinstance(item[key], str):
                raise ValueError(f"{key} must be a string, got {item[key]!r}")
        if "stop" in item:
            _stops(item["stop"], "stop")
    elif not isinstance(item["text"], str) or not item["text"]:
        raise ValueError(f"text must be a non-empty string, got {item['text']!r}")
    return item


@dataclass
class Task:
    """A task: its items by split and how to turn an item into the text the model reads."""

    name: str
    kind: str
    items: list[dict]
    what: str = ""
    template: str | None = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    eval_split: str = "test"
    fewshot_split: str = "train"
    stop: list[str] = field(default_factory=lambda: ["\n\n"])
    extract: str = "first_line"
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; "
                             f"known: {', '.join(KINDS)}")
        for i, item in enumerate(self.items):
            try:
                check_item(self.kind, item)
            except ValueError as err:
                raise ValueError(f"task {self.name!r}: item {i}: {err}") from None
        self.stop = _stops(self.stop, f"task {self.name!r}: stop")
        self.extract = check_extractor(self.extract)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be an integer >= 1, "
                             f"got {self.max_new_tokens!r}")
        if self.template is None:
            self.template = {"multiple_choice": "{context}", "generate": "{prompt}",
                             "perplexity": "{text}"}[self.kind]
        if not self.split(self.eval_split):
            raise ValueError(f"task {self.name!r} has no items in its eval split "
                             f"{self.eval_split!r}")

    def split(self, name: str) -> list[dict]:
        return [item for item in self.items if item.get("split", "test") == name]

    def render(self, item: dict) -> str:
        """The item through the template."""
        try:
            return self.template.format_map(item)  # type: ignore[union-attr]
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"task {self.name!r}: template {self.template!r} does not fit "
                             f"the item's fields {sorted(item)}: {err!r}") from None

    def target(self, item: dict) -> str:
        """The right answer of an item, as a few-shot example shows it."""
        return item["choices"][item["gold"]] if self.kind == "multiple_choice" else item["answer"]

    def context(self, index: int, num_fewshot: int = 0, seed: int = 1234) -> str:
        """The text the model reads for eval item `index` with `num_fewshot` examples."""
        item = self.split(self.eval_split)[index]
        if num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
        examples = ""
        if num_fewshot:
            if self.kind == "perplexity":
                raise ValueError(f"task {self.name!r}: a perplexity task takes no few-shot "
                                 f"examples")
            pool = [x for x in self.split(self.fewshot_split) if x is not item]
            if len(pool) < num_fewshot:
                raise ValueError(f"task {self.name!r}: {num_fewshot} few-shot examples asked, "
                                 f"but its split {self.fewshot_split!r} has {len(pool)}")
            rng = np.random.default_rng([seed, index])
            chosen = rng.choice(len(pool), size=num_fewshot, replace=False)
            examples = "".join(self.render(pool[j]) + self.target_delimiter
                               + self.target(pool[j]) + self.fewshot_delimiter
                               for j in chosen)
        return self.description + examples + self.render(item)


def read_task_file(path: str | os.PathLike[str], name: str | None = None) -> Task:
    """Read a JSONL task file (format in the module docstring)."""
    text = read_utf8(path, "task file")
    options: dict[str, Any] = {}
    items: list[dict] = []
    kind: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise FileFormatError(path, f"not valid JSON: {err.msg} (column {err.colno})",
                                  field=where) from None
        if isinstance(obj, dict) and "task" in obj and not items and not options:
            if not isinstance(obj["task"], dict) or set(obj["task"]) - _OPTIONS:
                unknown = sorted(set(obj["task"]) - _OPTIONS) if isinstance(obj["task"], dict) \
                    else obj["task"]
                raise FileFormatError(path, f"the task header has unknown options {unknown}; "
                                      f"known: {', '.join(sorted(_OPTIONS))}", field=where)
            options = dict(obj["task"])
            kind = options.get("kind")
            if kind is not None and kind not in KINDS:
                raise FileFormatError(path, f"unknown kind {kind!r}; known: {', '.join(KINDS)}",
                                      field=where)
            continue
        if kind is None and isinstance(obj, dict):
            kind = _kind_of(obj)
            if kind is None:
                raise FileFormatError(path, f"cannot tell the task's kind from fields "
                                      f"{sorted(obj)}; an item has "
                                      + "; or ".join(", ".join(r) for r in _REQUIRED.values()),
                                      field=where)
        try:
            items.append(check_item(kind or "multiple_choice", obj))
        except ValueError as err:
            raise FileFormatError(path, str(err), field=where) from None
    if not items:
        raise FileFormatError(path, "the task file has no items")
    options.setdefault("name", name or os.path.splitext(os.path.basename(os.fspath(path)))[0])
    options["kind"] = kind
    try:
        return Task(items=items, **options)
    except (TypeError, ValueError) as err:
        raise FileFormatError(path, str(err), field="task") from None


def load_task(name_or_path: str, builtin: dict[str, Any] | None = None) -> Task:
    """A task by built-in name (`builtin` maps names to zero-argument makers) or JSONL path."""
    builtin = builtin or {}
    if name_or_path in builtin:
        return builtin[name_or_path]()
    if name_or_path.endswith(".jsonl") or os.path.sep in name_or_path:
        return read_task_file(name_or_path)
    raise ValueError(f"unknown task {name_or_path!r}; built-in tasks: "
                     f"{', '.join(builtin) or '(none)'}; or give the path of a .jsonl file")
