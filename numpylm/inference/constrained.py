"""Constrained decoding, part 3 of the guide: make a model's output match a regular expression,
one of a list of strings, or a small JSON schema, whatever the model would rather say.

At every step, each token whose text would leave the output with no possible completion is
masked (its logit set to -inf) before sampling. "Possible completion" is the `regex` package's
partial matching: `pattern.fullmatch(text, partial=True)` succeeds when `text` matches the
whole pattern or could be extended into a match, so no automaton has to be written by hand.
End-of-sequence ids are allowed only once the text is a complete match (and are then the only
choice when no token can extend it). Without one, the output ends at the first complete match
(`stop_at_first_match`, the default then: the only way to stop a pattern like `[0-9]+`; of two
choices where one begins the other, the shorter wins), or, with `stop_at_first_match=False`,
when no token can extend a complete match.

Cost and pruning. Testing every token of the vocabulary would be V partial matches per step
(50,257 for GPT-2). The tokens' texts are kept in a trie (a prefix tree of their bytes): the
walk tests each node's prefix once, and a prefix with no possible completion prunes every token
that starts with it. A step costs one partial match per *live* trie node, each linear in the
output's length; a tight pattern (digits, a list of words) keeps only a few branches alive, a
loose one (`.*`) visits the whole trie. Tokens are compared as bytes; a token that ends in the
middle of a UTF-8 character is allowed when some character that begins with its bytes, and
that the vocabulary holds whole in some token, keeps the text matchable (one partial match per
such character; characters the vocabulary never holds whole are not considered).

A multi-byte character costs most: the bytes that begin one can be finished by every
character of the vocabulary with that lead byte (thousands, for CJK), each one partial match.
A pattern that can only ever match ASCII text (`ascii_only`: a conservative reading of its
source, e.g. `[0-9]{4}-[0-9]{2}` or `yes|no`, but not `.`, `\\w` or `[^"]`, which match
other characters too) prunes every byte >= 0x80 without a test, which makes such patterns
tens of times cheaper per step on a 49k vocabulary.

`json_schema_regex` turns a small subset of JSON Schema into a regex: `type` string, integer,
number, boolean, null, object (`properties`, all written, in order, no spaces) and array
(`items`, with `minItems`/`maxItems`), and `enum`; anything else is a ValueError.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import regex

from numpylm.inference.generate import _as_prompts, _crop, context_limit
from numpylm.inference.sampling import SamplingParams, sample_next
from numpylm.nn.module import evaluating

__all__ = ["RegexConstraint", "ascii_only", "choice_regex", "constrained_generate",
           "json_schema_regex"]


_SAFE_ESCAPES = set("tnrfvbBAZ")  # escapes of letters that match no non-ASCII character


def ascii_only(pattern: str, flags: int = 0) -> bool:
    """True when `pattern` can match nothing but ASCII text, read conservatively from its
    source: ASCII itself, case-sensitive, without `.`, negated sets `[^...]`, escapes of
    letters or digits that stand for classes or code points (`\\w`, `\\d`, `\\s`, `\\p`, `\\x`,
    `\\u`, octal, ...) and inline flags. False may be wrong (a slower walk, same masks); True is
    never wrong."""
    if not pattern.isascii() or flags & (regex.IGNORECASE | regex.V1 | regex.FULLCASE):
        return False
    i, in_set = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1:i + 2]
            if escaped.isalnum() and escaped not in _SAFE_ESCAPES:
                return False
            i += 2
            continue
        if in_set:
            if c == "[" and pattern[i + 1:i + 2] == ":":  # [:alpha:] matches other letters
                return False
            if c == "]":
                in_set = False
        elif c == ".":
            return False
        elif c == "[":
            if pattern[i + 1:i + 2] == "^":
                return False
            in_set = True
            if pattern[i + 1:i + 2] == "]":  # a "]" first in a set is a literal
                i += 1
        elif c == "(" and pattern[i + 1:i + 2] == "?":
            after = pattern[i + 2:i + 3]
            if after.isalpha() and after != "P":  # inline flags such as (?i)
                return False
        i += 1
    return True


def _token_bytes(tokenizer: Any, token: int) -> bytes:
    if hasattr(tokenizer, "token_bytes"):
        return tokenizer.token_bytes(token)
    return tokenizer.decode([token]).encode("utf-8")


def _text(data: bytes) -> tuple[str | None, int]:
    """(`data` as text with an unfinished UTF-8 character at the end left out, how many bytes
    that character still lacks); (None, 0) if `data` is not UTF-8."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data" or e.start < len(data) - 3:
            return None, 0
        lead = data[e.start]
        size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        return data[:e.start].decode("utf-8"), size - (len(data) - e.start)


class RegexConstraint:
    """Which tokens may come next so that the output can still match `pattern`.

    `tokenizer` gives each id's bytes (`token_bytes`, or `decode`); its special tokens and ids
    at or above `vocab_size` (the model's) are never allowed as text.
    """

    def __init__(self, pattern: str, tokenizer: Any, vocab_size: int | None = None) -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"pattern must be a regular expression string, got {pattern!r}")
        try:
            self.pattern = regex.compile(pattern)
        except regex.error as e:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: "
                             f"{e}") from None
        V = tokenizer.vocab_size if vocab_size is None else vocab_size
        specials = getattr(tokenizer, "special_tokens", None)
        specials = set(specials.values()) if isinstance(specials, dict) else set()
        self.vocab_size = V
        self.ascii_only = ascii_only(pattern, self.pattern.flags)
        self.trie: dict = {}  # byte -> child node; key None at a node: ids ending there
        # The non-ASCII characters that some token holds whole, by each proper prefix of their
        # UTF-8 bytes: the ways a character split across tokens may be finished.
        self._chars_by_prefix: dict[bytes, list[str]] = {}
        for token in range(min(V, tokenizer.vocab_size)):
            if token in specials:
                continue
            try:
                data = _token_bytes(tokenizer, token)
            except ValueError:  # an id the tokenizer does not use
                continue
            if not data:
                continue
            node = self.trie
            for byte in data:
                node = node.setdefault(byte, {})
            node.setdefault(None, []).append(token)
            for char in set(_text(data)[0] or ""):
                encoded = char.encode("utf-8")
                for i in range(1, len(encoded)):
                    chars = self._chars_by_prefix.setdefault(encoded[:i], [])
                    if char not in chars:
                        chars.append(char)

    def status(self, data: bytes) -> tuple[bool, bool]:
        """(can `data` still become a match, is it a complete match)."""
        text, missing = _text(data)
        if text is None:
            return False, False
        if missing:  # an unfinished character: live if some way of finishing it is
            return self._finishable(data, missing), False
        m = self.pattern.fullmatch(text, partial=True)
        return m is not None, m is not None and not m.partial

    def _finishable(self, data: bytes, missing: int) -> bool:
        """Whether a character that the vocabulary spells whole somewhere, and whose UTF-8
        bytes begin with the unfinished ones at the end of `data`, keeps it matchable."""
        cut = len(_text(data)[0].encode("utf-8"))  # where the unfinished character begins
        head, tail = data[:cut], data[cut:]
        return any(self.status(head + c.encode("utf-8"))[0]
                   for c in self._chars_by_prefix.get(tail, ()))

    def allowed(self, data: bytes) -> np.ndarray:
        """Boolean mask (V,) of the tokens that keep the output `data` matchable."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        stack = [(self.trie, data)]
        while stack:  # depth-first over the trie, pruning dead prefixes
            node, prefix = stack.pop()
            for byte, child in node.items():
                if byte is None or (byte >= 0x80 and self.ascii_only):
                    continue
                extended = prefix + bytes([byte])
                if not self.status(extended)[0]:
                    continue  # no token starting with these bytes can lead to a match
                mask[child.get(None, [])] = True
                stack.append((child, extended))
        return mask


def choice_regex(choices: Sequence[str]) -> str:
    """A regex matching exactly one of `choices` (each taken literally)."""
    if (isinstance(choices, str) or not choices
            or not all(isinstance(c, str) and c for c in choices)):
        raise ValueError(f"choices must be a non-empty list of non-empty strings, got {choices!r}")
    return "(?:" + "|".join(regex.escape(c) for c in choices) + ")"


_JSON_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_JSON_INTEGER = r"-?(?:0|[1-9][0-9]*)"
_JSON_NUMBER = _JSON_INTEGER + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


def json_schema_regex(schema: dict) -> str:
    """A regex for the compact JSON texts that `schema` (the subset in the module docstring)
    allows."""
    if not isinstance(schema, dict):
        raise ValueError(f"schema must be a JSON object (dict), got {schema!r}")
    if "enum" in schema:
        return "(?:" + "|".join(regex.escape(json.dumps(v, separators=(",", ":")))
                                for v in schema["enum"]) + ")"
    kind = schema.get("type")
    simple = {"string": _JSON_STRING, "integer": _JSON_INTEGER, "number": _JSON_NUMBER,
              "boolean": "(?:true|false)", "null": "null"}
    if kind in simple:
        return simple[kind]
    if kind == "object":
        props = schema.get("properties", {})
        parts = [regex.escape(json.dumps(name)) + ":" + json_schema_regex(sub)
                 for name, sub in props.items()]
        return r"\{" + ",".join(parts) + r"\}"
    if kind == "array":
        item = json_schema_regex(schema.get("items", {"type": "string"}))
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        if high is not None and int(high) < max(low, 1):
            return r"\[\]" if low == 0 else _refuse(schema)
        more = f"{{{max(low - 1, 0)},{'' if high is None else int(high) - 1}}}"
        body = f"{item}(?:,{item}){more}"
        return r"\[" + (f"(?:{body})?" if low == 0 else body) + r"\]"
    return _refuse(schema)


def _refuse(schema: dict) -> str:
    raise ValueError(f"schema {schema!r} is outside the supported subset (type string, "
                     f"integer, number, boolean, null, object with properties, array with "
                     f"items/minItems/maxItems, enum)")


def constrained_generate(model: Any, tokenizer: Any, prompt: Any, max_new_tokens: int,
                         pattern: str, *, sampling: SamplingParams | None = None,
                         eos_token_ids: Sequence[int] = (),
                         stop_at_first_match: bool | None = None) -> np.ndarray:
    """Continue one `prompt` (1-D ids) so that the new tokens' text matches `pattern` (use
    `choice_regex` or `json_schema_regex` to make one); returns prompt + new ids.

    `sampling` chooses among the allowed tokens (default: greedy). EOS ids (default: the
    sampling's stop tokens) are allowed once the text matches and end the output (kept);
    `stop_at_first_match` (default: when there is no EOS id) ends it at the first complete
    match instead. Raises a ValueError if no token of the vocabulary can continue the text.
    """
    params = sampling if sampling is not None else SamplingParams(temperature=0.0)
    eos = [int(t) for t in (eos_token_ids or params.stop_tokens)]
    lazy = not eos if stop_at_first_match is None else stop_at_first_match
    constraint = RegexConstraint(pattern, tokenizer, model.vocab_size)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"constrained_generate: max_new_tokens must be an integer >= 0, "
                         f"got {max_new_tokens!r}")
    prompts, single = _as_prompts(prompt, allow_empty=False)
    if not single:
        raise ValueError("constrained_generate: give one prompt (a 1-D sequence of ids)")
    ids = [int(t) for t in prompts[0]]
    new: list[int] = []
    data = b""
    rng = params.rng()
    with evaluating(model):
        state = model.init_state(1)
        logits = np.asarray(model.step(state, _crop(prompts, context_limit(model))[0][None, :]))
        for step in range(max_new_tokens):
            mask = constraint.allowed(data)
            complete = constraint.status(data)[1]
            if complete and (lazy or not (mask.any() or eos)):
                break
            if complete:
                mask[[t for t in eos if t < len(mask)]] = True
            if not mask.any():
                raise ValueError(f"constrained_generate: no token can continue {data!r} "
                                 f"towards a match of {pattern!r}")
            processed = params.process(logits, [ids + new], step)
            masked = np.where(mask, processed, -np.inf)  # processed once, above
            token = int(sample_next(masked, params.temperature, params.top_k, params.top_p, rng,
                                    min_p=params.min_p)[0])
            new.append(token)
            if token in eos:
                break
            data += _token_bytes(tokenizer, token)
            logits = np.asarray(model.step(state, np.array([[token]])))
    return np.asarray(ids + new, dtype=np.int64)
