"""Constrained decoding: whatever the model prefers, the output matches the regex, one of the
choices, or the JSON schema; with characters and with multi-byte BPE tokens; bad input named."""
import json

import numpy as np
import pytest
import regex
from hypothesis import given, strategies as st

from numpylm.inference import SamplingParams
from numpylm.inference.constrained import (RegexConstraint, choice_regex, constrained_generate,
                                           json_schema_regex)
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.tokenizers import CharTokenizer
from numpylm.tokenizers.bpe import BPETokenizer

CHARS = CharTokenizer.from_text('ab01xyz -{}":,[]truefalsnmegok23456789')


def gpt(vocab_size: int, seed: int = 0) -> GPT:
    m = GPT(GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16),
            rng=seed)
    rng = np.random.default_rng(seed)
    for p in m.parameters():
        p.data[...] = rng.normal(0, 0.5, p.shape)
    return m


MODEL = gpt(CHARS.vocab_size)
atom = st.sampled_from(["a", "b", "0", "1", "x", "[ab]", "[0-1]", "(?:ab|x)", "z"])
quantifier = st.sampled_from(["", "?", "{1,3}", "{2}", "*"])
piece = st.builds(lambda a, q: a + q, atom, quantifier)
branch = st.lists(piece, min_size=1, max_size=4).map("".join)
patterns = st.lists(branch, min_size=1, max_size=2).map("|".join)


@given(pattern=patterns, seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 1.0]))
def test_outputs_always_match_their_pattern(pattern, seed, temperature):
    prompt = CHARS.encode("xy")
    out = constrained_generate(MODEL, CHARS, prompt, 40, pattern,
                               sampling=SamplingParams(temperature, seed=seed))
    text = CHARS.decode(list(out[2:]))
    # Stopping at the first complete match, a bounded pattern always completes; `*` may run
    # to the limit, and then the text is still a prefix of a match.
    m = regex.fullmatch(pattern, text, partial=True)
    assert m is not None, (pattern, text)
    assert not m.partial or len(out) == 42, (pattern, text)


def test_end_of_sequence_only_once_the_text_matches():
    """With an EOS id the output ends with it, and only after a complete match (here 0z, 1z,
    01z, ...: once z is written, nothing else is possible)."""
    eos = CHARS.encode(" ")[0]
    for seed in range(5):
        out = constrained_generate(MODEL, CHARS, CHARS.encode("ab"), 30, "[01]+z",
                                   sampling=SamplingParams(1.0, seed=seed), eos_token_ids=[eos])
        new = list(out[2:])
        assert new[-1] == eos
        assert regex.fullmatch("[01]+z", CHARS.decode(new[:-1]))


def test_choices():
    choices = ["yes", "no", "maybe"]
    tok = CharTokenizer.from_text("yesnomaybe!? ")
    model = gpt(tok.vocab_size, 1)
    seen = set()
    for seed in range(8):
        out = constrained_generate(model, tok, tok.encode("?"), 10, choice_regex(choices),
                                   sampling=SamplingParams(1.5, seed=seed))
        seen.add(tok.decode(list(out[1:])))
    assert seen <= set(choices) and len(seen) >= 2


def test_multi_byte_bpe_tokens_match_too():
    text = "order 123-abc and 456-de, then 789-xyz; é and ü cost 10-ab " * 20
    tok = BPETokenizer.train(text, 300)
    model = gpt(tok.vocab_size, 2)
    pattern = "[0-9]{3}-[a-zé]{2,4};"
    for seed in range(4):
        out = constrained_generate(model, tok, tok.encode("order"), 20, pattern,
                                   sampling=SamplingParams(1.0, seed=seed))
        assert regex.fullmatch(pattern, tok.decode(list(out[1:])))


def test_json_schema_outputs_parse_and_have_the_types():
    schema = {"type": "object", "properties": {
        "name": {"enum": ["ab", "xy"]}, "n": {"type": "integer"}, "ok": {"type": "boolean"},
        "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}}}
    pattern = json_schema_regex(schema)
    for seed in range(3):
        out = constrained_generate(MODEL, CHARS, CHARS.encode("x"), 200, pattern,
                                   sampling=SamplingParams(1.0, seed=seed))
        value = json.loads(CHARS.decode(list(out[1:])))
        assert value["name"] in ("ab", "xy") and isinstance(value["n"], int)
        assert isinstance(value["ok"], bool) and len(value["flags"]) <= 2
        assert all(isinstance(f, bool) for f in value["flags"])


def test_the_mask_is_the_brute_force_one():
    """The trie walk allows exactly the tokens a check of every token allows."""
    constraint = RegexConstraint("a[b0]{1,2}x|1+", CHARS)
    for done in ["", "a", "ab", "ab0", "1", "x"]:
        expected = [regex.fullmatch("a[b0]{1,2}x|1+", done + CHARS.decode([t]), partial=True)
                    is not None for t in range(CHARS.vocab_size)]
        np.testing.assert_array_equal(constraint.allowed(done.encode()), expected, err_msg=done)


@pytest.mark.parametrize("call, match", [
    (lambda: constrained_generate(MODEL, CHARS, [1], 5, "a(b"), "not a valid regular"),
    (lambda: choice_regex([]), "choices"),
    (lambda: choice_regex("yes"), "choices"),
    (lambda: json_schema_regex({"type": "object", "patternProperties": {}, "anyOf": []}) and
     json_schema_regex({"type": "date"}), "outside the supported subset"),
    (lambda: constrained_generate(MODEL, CHARS, [1], 5, "Q"), "no token can continue"),
    (lambda: constrained_generate(MODEL, CHARS, [1], -1, "a"), "max_new_tokens"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_logit_processors_still_apply_within_the_constraint():
    """Among the allowed a and b, a bias of +100 on b makes greedy write bbb, -100 makes aaa."""
    b = CHARS.encode("b")[0]
    for bias, expected in ((100.0, "bbb"), (-100.0, "aaa")):
        out = constrained_generate(MODEL, CHARS, CHARS.encode("x"), 5, "[ab]{3}",
                                   sampling=SamplingParams(0, logit_bias={b: bias}))
        assert CHARS.decode(list(out[1:])) == expected


@pytest.mark.parametrize("pattern, expected", [
    (r"[0-9]{4}-[0-9]{2}", True), ("yes|no", True), (r"[A-Za-z ,.]+", True), (r"a\.b", True),
    (r"[]a]+", True), (r"(?:ab)(?P<n>c)", True), (json_schema_regex({"type": "number"}), True),
    (".", False), (r"\w+", False), (r"\d", False), (r"\s", False), (r'[^"]', False),
    (r"(?i)abc", False), (r"\x41", False), (r"\\.", False), ("é", False),
    (r"[[:alpha:]]", False), (r"\p{L}", False), (json_schema_regex({"type": "string"}), False),
])
def test_ascii_only_patterns_are_recognised_conservatively(pattern, expected):
    from numpylm.inference.constrained import ascii_only
    assert ascii_only(pattern) is expected
    if expected:  # a claim of ASCII-only must hold: no non-ASCII text is ever a prefix
        for text in ("é", "aé", "٣", "\u212a", "1\u00a0"):
            m = regex.fullmatch(pattern, text, partial=True)
            assert m is None, (pattern, text)


MULTI = BPETokenizer.train("naïve café 12-34 über straße 日本 ab.cd, x " * 30, 320)


@given(pattern=st.sampled_from([r"[0-9]{2}-[0-9]{2}", r"ab\.cd|x", r"[a-z ]+", r"[ab]+,",
                                r"caf[eé]", r".{1,3}", r"\w+"]),
       done=st.sampled_from(["", "1", "12-", "ab", "caf", "a", "x "]))
def test_skipping_non_ascii_bytes_keeps_the_mask(pattern, done):
    """The ASCII-only shortcut allows exactly what the full walk allows."""
    fast = RegexConstraint(pattern, MULTI)
    slow = RegexConstraint(pattern, MULTI)
    slow.ascii_only = False
    np.testing.assert_array_equal(fast.allowed(done.encode()), slow.allowed(done.encode()))
