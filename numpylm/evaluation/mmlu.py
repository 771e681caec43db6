"""MMLU's development questions as a task, part 4 of the guide: the benchmark most papers quote,
scored exactly as lm-evaluation-harness's zero-shot `mmlu` task scores it, so a number here
can be set beside a number there.

The questions come from the `lm_eval` package when it is installed (it is never required):
its wheel ships `lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`, which holds, for each
of the 57 subjects, the subject's dev questions written out as chain-of-thought examples:

    The following are multiple choice questions (with answers) about <subject>.

    Q: <question, one or more lines>
    (A) <choice> (B) <choice> (C) <choice> (D) <choice>      (or one "(X) ..." per line)
    A: Let's think step by step. <reasoning> The answer is (<letter>).

    Q: ...

`parse_cot_prompts` turns each block into a question, its four choices and the gold index
(the letter of the last "The answer is (X)"). The file is found, not imported, so reading it
costs nothing. Its known irregularities are handled by rule: a subject may hold four blocks
instead of five; the header may follow a blank line; one question (college chemistry's EPR
spectrum) offers five options (A) to (E), which no MMLU question does, and is left out
(`FIVE_OPTIONS` counts what was left out). Anything else that does not fit (no header, a
block with no "(A)" line, letters out of order, no stated answer) is a `FileFormatError`
naming the subject, since it means the file's format changed.

Each item is rendered the way lm-evaluation-harness's `mmlu/default` template does it, with
the subject's description before it (the harness's zero-shot context is
description + doc_to_text):

    The following are multiple choice questions (with answers) about <subject>.\\n\\n
    <question.strip()>\\nA. <choice 0>\\nB. <choice 1>\\nC. <choice 2>\\nD. <choice 3>\\nAnswer:

and the choices scored are the letters " A", " B", " C", " D" (target delimiter " "). Every
item is in the eval split: the task is zero-shot, as there is no other split to draw from.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from numpylm.evaluation.tasks import Task
from numpylm.io.errors import FileFormatError
from numpylm.io.text import read_utf8

__all__ = ["FIVE_OPTIONS", "INSTALL_LM_EVAL", "LETTERS", "MMLU_FILE", "find_mmlu_file",
           "mmlu_dev", "mmlu_prompt", "parse_cot_prompts"]

INSTALL_LM_EVAL = "pip install lm_eval"
MMLU_FILE = ("tasks", "mmlu", "flan_cot_fewshot", "_cot_prompts.json")
LETTERS = ("A", "B", "C", "D")
FIVE_OPTIONS = 1  # five-option questions the bundled file holds (left out); checked by tests

_HEADER = re.compile(r"The following are multiple choice questions \(with answers\) about "
                     r"(?P<subject>[^\n]+)\.")
_BLOCK = re.compile(r"(?:^|\n\n)Q: ")
# An option marker: "(A) " at a line start or after white space inside the options line.
_OPTION = re.compile(r"(?:^|\s+)\(([A-Z])\) ")
_ANSWER = re.compile(r"The answer is \(([A-Z])\)")


def find_mmlu_file() -> Path | None:
    """The bundled `_cot_prompts.json` of an installed `lm_eval` (found, not imported), or
    None when the package or the file is absent."""
    try:
        spec = importlib.util.find_spec("lm_eval")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*MMLU_FILE)
        if path.is_file():
            return path
    return None


def _parse_block(block: str, subject: str, n: int, path: Any) -> dict | None:
    """One "Q: ... A: ..." block as {question, options, gold}; None for a five-option one."""
    where = f"question {n}"
    question_part, sep, reasoning = block.partition("\nA: ")
    if not sep:
        raise FileFormatError(path, f"{where}: no line starting 'A: ' (the worked answer)",
                              field=subject)
    # The options start at the last line that begins with "(A) "; the question is before it.
    start = question_part.rfind("\n(A) ")
    if start < 0:
        raise FileFormatError(path, f"{where}: no line starting '(A) ' (the choices)",
                              field=subject)
    question, options_text = question_part[:start], question_part[start + 1:]
    marks = list(_OPTION.finditer(options_text))
    letters = "".join(m.group(1) for m in marks)
    if letters != "ABCDE"[:len(letters)] or len(letters) < 4:
        raise FileFormatError(path, f"{where}: the options are lettered {letters!r}, expected "
                              f"(A) to (D)", field=subject)
    ends = [m.start() for m in marks[1:]] + [len(options_text)]
    options = [options_text[m.end():end].strip() for m, end in zip(marks, ends)]
    answers = _ANSWER.findall(reasoning)
    if not answers:
        raise FileFormatError(path, f"{where}: no 'The answer is (X)' in the worked answer",
                              field=subject)
    if len(options) == 5:
        return None  # MMLU questions have four options; see FIVE_OPTIONS
    gold = LETTERS.index(answers[-1]) if answers[-1] in LETTERS else -1
    if gold < 0 or not all(options) or not question.strip():
        raise FileFormatError(path, f"{where}: answer ({answers[-1]}) is not one of A-D, or "
                              f"a choice or the question is empty", field=subject)
    return {"question": question, "options": options, "gold": gold}


def parse_cot_prompts(data: Any, path: Any = "_cot_prompts.json") -> tuple[list[dict], int]:
    """(items, left out): every dev question of `data` (subject -> prompt text, the JSON
    file's content) as {subject, question, options, gold}, in the file's subject order, and
    the number of five-option questions left out. `path` names the file in errors."""
    if not isinstance(data, dict) or not data:
        raise FileFormatError(path, "expected a JSON object mapping subjects to prompt text")
    items, left_out = [], 0
    for subject, text in data.items():
        if not isinstance(text, str):
            raise FileFormatError(path, f"the prompt is not a string", field=subject)
        text = text.strip()
        header = _HEADER.match(text)
        if header is None or header.group("subject") != subject.replace("_", " "):
            raise FileFormatError(path, f"the prompt does not open with 'The "
                                  f"following are multiple choice questions (with answers) "
                                  f"about {subject.replace('_', ' ')}.'", field=subject)
        blocks = _BLOCK.split(text[header.end():].strip())
        if blocks[0].strip():
            raise FileFormatError(path, f"text between the header and the first "
                                  f"'Q: '", field=subject)
        if not 1 <= len(blocks) - 1 <= 5:
            raise FileFormatError(path, f"{len(blocks) - 1} questions, expected 1 "
                                  f"to 5", field=subject)
        for n, block in enumerate(blocks[1:], start=1):
            item = _parse_block(block, subject, n, path)
            if item is None:
                left_out += 1
            else:
                items.append({"subject": subject, **item})
    return items, left_out


def mmlu_prompt(subject: str, question: str, options: list[str]) -> str:
    """The harness's zero-shot context: the subject's description, then `mmlu/default`'s
    doc_to_text (module docstring)."""
    if len(options) != 4:
        raise ValueError(f"an MMLU question has 4 options, got {len(options)}")
    description = ("The following are multiple choice questions (with answers) about "
                   f"{subject.replace('_', ' ')}.\n\n")
    lines = [question.strip(), *(f"{letter}. {option}" for letter, option in zip(LETTERS,
                                                                                  options))]
    return description + "\n".join(lines) + "\nAnswer:"


def mmlu_dev(path: str | os.PathLike[str] | None = None) -> Task:
    """The MMLU dev questions bundled with `lm_eval` (or the JSON file at `path`) as a
    multiple-choice task scored on the letters " A" to " D"."""
    if path is None:
        path = find_mmlu_file()
        if path is None:
            raise ValueError(f"the task 'mmlu_dev' reads the MMLU dev questions that the "
                             f"lm_eval package bundles, and lm_eval is not installed: "
                             f"{INSTALL_LM_EVAL}")
    try:
        data = json.loads(read_utf8(path, "MMLU prompts file"))
    except json.JSONDecodeError as err:
        raise FileFormatError(path, f"not valid JSON: {err.msg} (line {err.lineno})") from None
    parsed, _ = parse_cot_prompts(data, path)
    items = [{"context": mmlu_prompt(p["subject"], p["question"], p["options"]),
              "choices": list(LETTERS), **p} for p in parsed]
    return Task("mmlu_dev", "multiple_choice", items,
                what="MMLU's dev questions (57 subjects), zero-shot, as lm-eval's mmlu")
