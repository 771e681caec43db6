"""Generative tasks: stop strings, answer extraction, exact match after normalisation."""
from __future__ import annotations

import numpy as np
import pytest

from numpylm.evaluation.generative import (exact_match, extract_answer, generate_until,
                                           normalize)
from numpylm.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer("\n 0123456789=abx")


class Scripted:
    """A model that writes `script` whatever it reads: step k puts all its mass on character
    k of the script (then on "x" for ever)."""

    block_size = None

    def __init__(self, script: str) -> None:
        self.ids = TOKENIZER.encode(script)
        self.vocab_size = TOKENIZER.vocab_size

    def init_state(self, batch_size: int = 1) -> dict:
        return {"written": 0}

    def step(self, state, ids, mask=None) -> np.ndarray:
        k = state["written"]
        state["written"] += 1
        logits = np.full((1, self.vocab_size), -10.0)
        logits[0, self.ids[k] if k < len(self.ids) else TOKENIZER.encode("x")[0]] = 10.0
        return logits


def test_generation_stops_before_the_first_stop_string():
    model = Scripted("12 = 3\n\nb")
    prompt = TOKENIZER.encode("a=")
    assert generate_until(model, TOKENIZER, prompt, ["\n\n"]) == "12 = 3"
    assert generate_until(model, TOKENIZER, prompt, ["\n", "= "]) == "12 "  # the earliest
    assert generate_until(model, TOKENIZER, prompt, ["zz"], max_new_tokens=4) == "12 ="
    # The end-of-text id ends the text too (here the id of "\n").
    assert generate_until(model, TOKENIZER, prompt, ["zz"], eos_id=0) == "12 = 3"


def test_sampling_is_seeded():
    class Flat(Scripted):
        def step(self, state, ids, mask=None):
            return np.zeros((1, self.vocab_size))

    model = Flat("")
    a = generate_until(model, TOKENIZER, [1], ["zz"], 12, temperature=1.0, seed=3)
    assert a == generate_until(model, TOKENIZER, [1], ["zz"], 12, temperature=1.0, seed=3)
    assert a != generate_until(model, TOKENIZER, [1], ["zz"], 12, temperature=1.0, seed=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_until(model, TOKENIZER, [1], ["zz"], 0)
    with pytest.raises(ValueError, match="no tokens"):
        generate_until(model, TOKENIZER, [], ["zz"])


@pytest.mark.parametrize("text, rule, answer", [
    ("so 12 + 30 = 42.", "last_number", "42"),
    ("we owe -1,234.5 dollars", "last_number", "-1234.5"),
    ("no digits here", "last_number", ""),
    ("  Paris\nis the capital", "first_line", "Paris"),
    ("The answer is (B) surely", r"regex:\(([A-D])\)", "B"),
    ("The answer is B", r"regex:[A-D]$", "B"),
    ("nothing", r"regex:\d+", ""),
    (" as is ", "none", " as is "),
])
def test_extraction_rules(text, rule, answer):
    assert extract_answer(text, rule) == answer


def test_exact_match_after_normalisation():
    assert normalize("  The  Answer\tIs 42. ") == "the answer is 42"
    assert exact_match("Paris.", "paris") == 1.0 and exact_match("42", " 42 ") == 1.0
    assert exact_match("42", "420") == 0.0 and exact_match("", "0") == 0.0
    with pytest.raises(ValueError, match="unknown answer extractor 'best'"):
        extract_answer("x", "best")
    with pytest.raises(ValueError, match="bad regular expression"):
        extract_answer("x", "regex:(")
