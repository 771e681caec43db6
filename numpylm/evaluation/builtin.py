"""Built-in tasks, generated offline from the embedded corpus (Python's reference manual) or from
rules, so that every model can be measured without a download. Each has a checker of its
answer by construction; items come from the corpus' last 10%, the text the training commands
hold out for validation, so a model trained by numpylm has not read them.

- `next_sentence` (HellaSwag-style, multiple choice): a sentence of the manual, then its true
  next sentence against three sentences from elsewhere. Measures whether the model follows
  the thread of a paragraph.
- `identifier_cloze` (multiple choice): prose up to a quoted name ("AttributeError",
  "__dict__"), then the true name against three other names the manual quotes. Measures
  whether the model knows which identifier the prose is about.
- `arithmetic` (generative): "Question: What is 47 + 85?" answered with a number, exact
  match on the last number written. Measures multi-digit addition and subtraction, which a
  small character model cannot do and a capable one can.
- `corpus_bpb` (perplexity): the held-out tail in documents of about 4,000 characters,
  scored with rolling bits per byte. Measures plain language modelling, comparable across
  tokenizers.
- `mmlu_dev` (multiple choice, only where the `lm_eval` package is installed): the MMLU dev
  questions it bundles, zero-shot, formatted and scored as lm-evaluation-harness's `mmlu`
  (`numpylm.evaluation.mmlu`). Measures knowledge across 57 school and professional subjects.

Every task is deterministic (fixed seeds); `BUILTIN_TASKS` maps each name to its maker, and
`get_task` finds a task by built-in name or JSONL path, saying how to get `mmlu_dev` when
lm_eval is absent.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from numpylm.corpus import embedded_corpus
from numpylm.evaluation.mmlu import INSTALL_LM_EVAL, find_mmlu_file, mmlu_dev
from numpylm.evaluation.tasks import Task, load_task

__all__ = ["BUILTIN_TASKS", "arithmetic", "corpus_bpb", "get_task", "held_out_tail",
           "identifier_cloze", "next_sentence", "OFFLINE_TASKS"]

N_TEST, N_TRAIN = 100, 10  # scored items, and the few-shot pool (split "train") before them
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\"'][.!?])\s+(?=[A-Z\"])")
_QUOTED = re.compile(r'"([A-Za-z_][A-Za-z0-9_]{2,})"')


def held_out_tail(text: str | None = None, fraction: float = 0.1) -> str:
    """The last `fraction` of the text (the embedded corpus by default), from a line start."""
    text = embedded_corpus() if text is None else text
    start = int(len(text) * (1 - fraction))
    newline = text.find("\n", start)
    return text[newline + 1 if newline >= 0 else start:]


def _prose_sentences(text: str) -> list[list[str]]:
    """The sentences of each paragraph, its lines joined (interactive sessions dropped)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.split("\n")]
        if any(line.startswith((">>>", "...")) for line in lines):
            continue  # an interactive session: code, not prose
        joined = " ".join(lines)
        out.append(_SENTENCE_END.split(joined))
    return out


def _split(items: list[dict]) -> list[dict]:
    for i, item in enumerate(items):
        item["split"] = "train" if i < N_TRAIN else "test"
    return items


def next_sentence(text: str | None = None, seed: int = 0, longest: int = 160) -> Task:
    """HellaSwag-style: a sentence, then the true next one among four (module docstring).
    Sentences have 25 to 160 characters, choices at most `longest` (a smaller `longest`
    makes choices that fit a short window, and fewer items)."""
    rng = np.random.default_rng(seed)
    pairs, pool = [], []
    for sentences in _prose_sentences(held_out_tail(text)):
        ok = [25 <= len(s) <= 160 and s.endswith(".") for s in sentences]
        short = [good and len(s) <= longest for s, good in zip(sentences, ok)]
        pool.extend(s for s, good in zip(sentences, short) if good)
        pairs.extend((a, b) for (a, b, x, y) in zip(sentences, sentences[1:], ok, short[1:])
                     if x and y)
    if len(pool) < 9 or not pairs:
        raise ValueError(f"next_sentence: the text's held-out tail has {len(pairs)} pairs of "
                         f"sentences and {len(pool)} sentences to draw from; it is too short")
    items = []
    for i in rng.permutation(len(pairs))[:N_TEST + N_TRAIN]:
        context, true = pairs[i]
        others = [str(s) for s in rng.choice(pool, size=8, replace=False)
                  if s not in (context, true)]
        choices = [true, *others[:3]]
        order = rng.permutation(4)
        items.append({"context": context, "choices": [choices[j] for j in order],
                      "gold": int(np.flatnonzero(order == 0)[0])})
    return Task("next_sentence", "multiple_choice", _split(items),
                what="picks a sentence's true successor among sentences from elsewhere")


def identifier_cloze(text: str | None = None, seed: int = 0) -> Task:
    """The prose up to a quoted identifier; the true identifier among four (module docstring)."""
    rng = np.random.default_rng(seed)
    tail = held_out_tail(text)
    names = [m.group(1) for m in _QUOTED.finditer(tail)]
    vocabulary = sorted({n for n in names if names.count(n) >= 2})
    candidates = []
    for sentences in _prose_sentences(tail):
        for sentence in sentences:
            for m in _QUOTED.finditer(sentence):
                context = sentence[:m.start() + 1]   # ends with the opening quote
                if len(context) >= 30 and m.group(1) in vocabulary:
                    candidates.append((context, m.group(1)))
    if len(vocabulary) < 7 or not candidates:
        raise ValueError(f"identifier_cloze: the text's held-out tail quotes {len(vocabulary)} "
                         f"names at least twice (7 needed); it is too short")
    items = []
    for i in rng.permutation(len(candidates))[:N_TEST + N_TRAIN]:
        context, true = candidates[i]
        others = [str(n) for n in rng.choice(vocabulary, size=6, replace=False) if n != true][:3]
        choices = [true, *others]
        order = rng.permutation(4)
        items.append({"context": context, "choices": [choices[j] for j in order],
                      "gold": int(np.flatnonzero(order == 0)[0])})
    return Task("identifier_cloze", "multiple_choice", _split(items), target_delimiter="",
                what="fills in the name the prose quotes, among other quoted names")


def arithmetic(seed: int = 0, digits: int = 2) -> Task:
    """'Question: What is a + b?' / 'a - b', a and b of `digits` digits, answered by a number."""
    rng = np.random.default_rng(seed)
    low, high = 10 ** (digits - 1), 10 ** digits
    items = []
    for _ in range(N_TEST + N_TRAIN):
        a, b = (int(x) for x in rng.integers(low, high, size=2))
        op = "+" if rng.random() < 0.5 else "-"
        items.append({"prompt": f"What is {a} {op} {b}?",
                      "answer": str(a + b if op == "+" else a - b)})
    return Task("arithmetic", "generate", _split(items),
                template="Question: {prompt}\nAnswer:", stop=["\n"], extract="last_number",
                max_new_tokens=8, what=f"adds and subtracts {digits}-digit numbers, exact match")


def corpus_bpb(text: str | None = None, chars: int = 4000) -> Task:
    """The held-out tail cut at line starts into documents of about `chars` characters."""
    tail = held_out_tail(text)
    docs, start = [], 0
    while start < len(tail):
        end = tail.find("\n", start + chars)
        end = len(tail) if end < 0 else end + 1
        docs.append({"text": tail[start:end]})
        start = end
    return Task("corpus_bpb", "perplexity", docs,
                what="rolling bits per byte of the corpus' held-out tail")


BUILTIN_TASKS: dict[str, Callable[[], Task]] = {
    "next_sentence": next_sentence,
    "identifier_cloze": identifier_cloze,
    "arithmetic": arithmetic,
    "corpus_bpb": corpus_bpb,
}
OFFLINE_TASKS = tuple(BUILTIN_TASKS)  # the four made here, with no package beyond numpy
if find_mmlu_file() is not None:  # listed only where its data is on disk
    BUILTIN_TASKS["mmlu_dev"] = mmlu_dev


def get_task(name_or_path: str) -> Task:
    """A built-in task by name or a JSONL task file by path (`tasks.load_task`); asking for
    `mmlu_dev` without lm_eval says how to get it."""
    if name_or_path == "mmlu_dev" and name_or_path not in BUILTIN_TASKS:
        raise ValueError(f"the task 'mmlu_dev' reads the MMLU dev questions bundled with the "
                         f"lm_eval package, which is not installed here: {INSTALL_LM_EVAL}")
    return load_task(name_or_path, BUILTIN_TASKS)
