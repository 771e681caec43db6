"""Generative tasks, part 4 of the guide: the model writes its answer (GSM8K-style arithmetic,
short questions) and the answer is checked, so three rules decide the number:

1. **When to stop** (`generate_until`): decode greedily (or sample, seeded) one token at a
   time through the model's decoding state until the text written so far contains one of
   the stop strings, the end-of-text id, or `max_new_tokens`. The text is cut just before
   the first stop string.
2. **What the answer is** (`extract_answer`), one of:
   - `"last_number"`: the last number in the text (an optional minus sign, digits, commas
     between digit groups, a decimal part), commas removed: "so 1,234 apples" -> "1234";
   - `"first_line"`: the text up to its first newline, stripped;
   - `"regex:PATTERN"`: the first match of PATTERN, its first group if it has groups;
   - `"none"`: the whole text.
   Nothing found gives "" (wrong unless the reference is empty).
3. **When it is right** (`exact_match`): after `normalize` of both sides (strip, lowercase,
   inner whitespace collapsed to one space, a trailing full stop dropped), the strings are
   equal.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from numpylm.nn.module import evaluating

__all__ = ["EXTRACTORS", "exact_match", "extract_answer", "generate_until", "normalize"]

EXTRACTORS = ("last_number", "first_line", "regex:PATTERN", "none")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def check_extractor(rule: str) -> str:
    """`rule` if it names an extractor (rule 2), else a ValueError listing them."""
    if rule in ("last_number", "first_line", "none"):
        return rule
    if isinstance(rule, str) and rule.startswith("regex:"):
        try:
            re.compile(rule[len("regex:"):])
        except re.error as err:
            raise ValueError(f"answer extractor {rule!r}: bad regular expression: {err}") from None
        return rule
    raise ValueError(f"unknown answer extractor {rule!r}; known: {', '.join(EXTRACTORS)}")


def extract_answer(text: str, rule: str = "last_number") -> str:
    """The answer in a generated `text` by `rule` (rule 2 of the module docstring)."""
    rule = check_extractor(rule)
    if rule == "none":
        return text
    if rule == "first_line":
        return text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    if rule == "last_number":
        found = _NUMBER.findall(text)
        return found[-1].replace(",", "") if found else ""
    match = re.search(rule[len("regex:"):], text)
    if match is None:
        return ""
    return match.group(1) if match.groups() else match.group(0)


def normalize(text: str) -> str:
    """Strip, lowercase, collapse whitespace, drop one trailing full stop."""
    text = " ".join(text.strip().lower().split())
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the two strings are equal after `normalize`, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


def generate_until(model: Any, tokenizer: Any, prompt_ids: Sequence[int], stop: Sequence[str],
                   max_new_tokens: int = 32, eos_id: int | None = None,
                   temperature: float = 0.0, seed: int | None = None) -> str:
    """The text `model` writes after `prompt_ids`, cut before the first of `stop` (rule 1).

    Greedy when `temperature` is 0; otherwise sampled from softmax(logits / temperature)
    with a `numpy.random.Generator` seeded by `seed`. The prompt is cropped on the left to
    the model's `block_size`, and the transformer's state slides its window beyond it.
    """
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"generate_until: max_new_tokens must be an integer >= 1, "
                         f"got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"generate_until: temperature must be >= 0, got {temperature}")
    if len(prompt_ids) == 0:
        raise ValueError("generate_until: the prompt has no tokens")
    rng = np.random.default_rng(seed)
    limit = getattr(model, "block_size", None)
    prompt = list(prompt_ids)[-int(limit):] if limit is not None else list(prompt_ids)
    new: list[int] = []
    with evaluating(model):
        state = model.init_state(1)
        logits = model.step(state, np.asarray([prompt], dtype=np.int64))[0]
        for _ in range(max_new_tokens):
            z = np.asarray(logits, dtype=np.float64)
            if temperature == 0:
                token = int(np.argmax(z))
            else:
                p = np.exp((z - z.max()) / temperature)
                token = int(rng.choice(len(p), p=p / p.sum()))
            if eos_id is not None and token == eos_id:
                break
            new.append(token)
            text, stopped = _cut(tokenizer.decode(new), stop)
            if stopped:
                return text
            logits = model.step(state, np.asarray([[token]], dtype=np.int64))[0]
    return _cut(tokenizer.decode(new), stop)[0]
