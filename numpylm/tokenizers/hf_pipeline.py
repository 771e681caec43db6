"""The steps a `tokenizer.json` runs before BPE: normalise the text, then cut it into pieces.

Byte-level BPE (`bpe.py`) merges only inside chunks. A `tokenizer.json` says how to cut them as
a pipeline of small steps, each turning a list of pieces into a longer list: `Split` cuts at the
matches of a regular expression and says what happens to a match (`behavior`: kept alone,
glued to the piece before or after, dropped, or runs of matches kept together); `Digits` cuts
around every digit, which is how SmolLM2 makes "2024" four tokens; `ByteLevel` optionally cuts
with GPT-2's pattern and then rewrites every piece as one printable character per UTF-8 byte
(`bytes_to_unicode`), the alphabet in which the vocabulary and the merges are written.

A pattern read from a file runs under the `regex` package's timeout, so a pattern built to
backtrack forever is an error and not a hang.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import regex

from numpylm.io.errors import FileFormatError
from numpylm.tokenizers.interchange import bytes_to_unicode
from numpylm.tokenizers.patterns import GPT2_PATTERN, compile_pattern

# Seconds one pattern may spend on one piece of text before the split is an error.
PATTERN_TIMEOUT = 10.0

BEHAVIORS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")

BYTE_CHARS: list[str] = list(bytes_to_unicode().values())  # byte value -> its character
CHAR_BYTES: dict[str, int] = {char: b for b, char in enumerate(BYTE_CHARS)}


# Latin-1 decodes each byte to the character of the same number; this table then renames it.
_LATIN1_TO_BYTE_CHAR = {b: char for b, char in enumerate(BYTE_CHARS)}


def to_byte_chars(text: str) -> str:
    """`text` as GPT-2's byte-level alphabet: one character per UTF-8 byte (space -> 'Ġ')."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_CHAR)


# ---- splitting at the matches of a pattern ------------------------------------------------


def split_at_matches(piece: str, pattern: regex.Pattern[str], behavior: str,
                     invert: bool = False) -> list[str]:
    """Cut `piece` at the matches of `pattern`, treating each match as `behavior` says.

    The piece is first covered by segments, alternately gaps and matches (`invert` swaps the
    two roles). Then: Removed drops matches; Isolated keeps every segment; MergedWithPrevious
    glues a match to the gap before it, MergedWithNext to the gap after it; Contiguous joins
    runs of adjacent matches. Empty pieces are dropped.
    """
    if behavior == "Isolated" and not invert and pattern.groups == 0:
        # The common case, in C: when the matches cover the piece there are no gaps, and
        # Isolated keeps every match as it is.
        try:
            parts = pattern.findall(piece, timeout=PATTERN_TIMEOUT)
        except TimeoutError:
            raise _timeout(pattern, piece) from None
        if sum(map(len, parts)) == len(piece):
            return [part for part in parts if part]
    segments: list[tuple[int, int, bool]] = []
    previous = 0
    try:
        for found in pattern.finditer(piece, timeout=PATTERN_TIMEOUT):
            start, end = found.span()
            if start != previous:
                segments.append((previous, start, False))
            segments.append((start, end, True))
            previous = end
    except TimeoutError:
        raise _timeout(pattern, piece) from None
    if previous != len(piece):
        segments.append((previous, len(piece), False))
    if invert:
        segments = [(start, end, not match) for start, end, match in segments]
    spans = _merge_segments(segments, behavior)
    return [piece[start:end] for start, end in spans if end > start]


def _timeout(pattern: regex.Pattern[str], piece: str) -> ValueError:
    return ValueError(f"the split pattern {pattern.pattern[:80]!r} ran longer than "
                      f"{PATTERN_TIMEOUT} s on a piece of {len(piece)} characters")


def _merge_segments(segments: list[tuple[int, int, bool]], behavior: str) -> list[tuple[int, int]]:
    if behavior == "Removed":
        return [(start, end) for start, end, match in segments if not match]
    if behavior == "Isolated":
        return [(start, end) for start, end, _ in segments]
    spans: list[tuple[int, int]] = []
    previous_match = False
    ordered = reversed(segments) if behavior == "MergedWithNext" else segments
    for start, end, match in ordered:
        if behavior == "Contiguous":
            glue = match == previous_match
        else:  # a match joins its neighbour unless that neighbour is itself a match
            glue = match and not previous_match
        if glue and spans:
            first, last = spans[-1]
            spans[-1] = (start, last) if behavior == "MergedWithNext" else (first, end)
        else:
            spans.append((start, end))
        previous_match = match
    if behavior == "MergedWithNext":
        spans.reverse()
    return spans


# ---- the steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitStep:
    """`{"type": "Split", "pattern": {"Regex" or "String": ...}, "behavior", "invert"}`."""

    pattern: str
    behavior: str = "Isolated"
    invert: bool = False
    is_regex: bool = True

    def __post_init__(self) -> None:
        source = self.pattern if self.is_regex else regex.escape(self.pattern)
        object.__setattr__(self, "_compiled", compile_pattern(source))

    def apply(self, pieces: list[str]) -> list[str]:
        compiled = self._compiled  # type: ignore[attr-defined]
        return [part for piece in pieces
                for part in split_at_matches(piece, compiled, self.behavior, self.invert)]

    def to_json(self) -> dict[str, Any]:
        kind = "Regex" if self.is_regex else "String"
        return {"type": "Split", "pattern": {kind: self.pattern}, "behavior": self.behavior,
                "invert": self.invert}


@dataclass(frozen=True)
class DigitsStep:
    """`{"type": "Digits", "individual_digits"}`: every digit alone, or runs of digits."""

    individual_digits: bool = False

    def apply(self, pieces: list[str]) -> list[str]:
        # The reference cuts around each numeric character (Isolated) or each run (Contiguous);
        # a pattern that also matches the runs between them gives the same pieces, and every
        # character is matched, which is the fast path of `split_at_matches`.
        if self.individual_digits:
            cover = compile_pattern(r"\p{N}|[^\p{N}]+")
        else:
            cover = compile_pattern(r"\p{N}+|[^\p{N}]+")
        return [part for piece in pieces for part in split_at_matches(piece, cover, "Isolated")]

    def to_json(self) -> dict[str, Any]:
        return {"type": "Digits", "individual_digits": self.individual_digits}


@dataclass(frozen=True)
class ByteLevelStep:
    """`{"type": "ByteLevel", "add_prefix_space", "trim_offsets", "use_regex"}`.

    A leading space is added to each piece that lacks one when `add_prefix_space` is set (so
    "Hello" at the start of a text becomes the same token as in " Hello"); with `use_regex` the
    piece is cut by GPT-2's pattern; then every piece is rewritten in the byte alphabet.
    `trim_offsets` only moves character offsets, which numpylm does not report; it is kept
    so the file writes back unchanged.
    """

    add_prefix_space: bool = False
    trim_offsets: bool = True
    use_regex: bool = True

    def apply(self, pieces: list[str]) -> list[str]:
        gpt2 = compile_pattern(GPT2_PATTERN)
        out: list[str] = []
        for piece in pieces:
            if self.add_prefix_space and not piece.startswith(" "):
                piece = " " + piece
            parts = split_at_matches(piece, gpt2, "Isolated") if self.use_regex else [piece]
            out.extend(to_byte_chars(part) for part in parts)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"type": "ByteLevel", "add_prefix_space": self.add_prefix_space,
                "trim_offsets": self.trim_offsets, "use_regex": self.use_regex}


Step = SplitStep | DigitsStep | ByteLevelStep


def pre_tokenize(text: str, steps: list[Step]) -> list[str]:
    """Run the pre-tokenizer `steps` over `text`; the pieces BPE will merge inside."""
    pieces = [text] if text else []
    for step in steps:
        pieces = step.apply(pieces)
    return pieces


def normalize(text: str, normalizer: str | None) -> str:
    """The supported normalizers: none, or Unicode NFC (composed characters, as Qwen2 uses)."""
    return unicodedata.normalize("NFC", text) if normalizer == "NFC" else text


# ---- reading and writing the JSON sections ------------------------------------------------


def _fail(path: str | None, field: str, message: str) -> FileFormatError:
    return FileFormatError(path, message, field=field)


def field_of(node: Any, key: str, kind: type | tuple[type, ...], field: str, path: str | None,
             default: Any = ...) -> Any:
    """`node[key]` checked to be of `kind`; absent -> `default` (or an error without one)."""
    if not isinstance(node, dict):
        raise _fail(path, field, f"expected a JSON object, got {type(node).__name__}")
    if key not in node or (node[key] is None and default is not ...):
        if default is ...:
            raise _fail(path, f"{field}.{key}", "is missing")
        return default
    value = node[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    bad_bool = isinstance(value, bool) and bool not in kinds  # JSON true is no integer
    if not isinstance(value, kind) or bad_bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(path, f"{field}.{key}", f"expected {names}, got {type(value).__name__}")
    return value


def parse_normalizer(node: Any, path: str | None, field: str = "normalizer") -> str | None:
    """`null` -> None; `{"type": "NFC"}` (or a Sequence of only that) -> "NFC"; else an error."""
    if node is None:
        return None
    kind = field_of(node, "type", str, field, path)
    if kind == "NFC":
        return "NFC"
    if kind == "Sequence":
        items = field_of(node, "normalizers", list, field, path)
        found = {parse_normalizer(item, path, f"{field}.normalizers[{i}]")
                 for i, item in enumerate(items)}
        if found - {None}:
            return "NFC"
        return None
    raise _fail(path, f"{field}.type",
                f"normalizer {kind!r} is not supported (only null and NFC are)")


def normalizer_json(normalizer: str | None) -> dict[str, Any] | None:
    return None if normalizer is None else {"type": normalizer}


def parse_pre_tokenizer(node: Any, path: str | None, field: str = "pre_tokenizer") -> list[Step]:
    """The steps of a `pre_tokenizer` section (a Sequence is flattened); unknown types fail."""
    if node is None:
        return []
    kind = field_of(node, "type", str, field, path)
    if kind == "Sequence":
        items = field_of(node, "pretokenizers", list, field, path)
        return [step for i, item in enumerate(items)
                for step in parse_pre_tokenizer(item, path, f"{field}.pretokenizers[{i}]")]
    if kind == "Split":
        pattern_node = field_of(node, "pattern", dict, field, path)
        keys = list(pattern_node)
        if keys not in (["Regex"], ["String"]):
            raise _fail(path, f"{field}.pattern", 'expected {"Regex": ...} or {"String": ...}')
        pattern = field_of(pattern_node, keys[0], str, f"{field}.pattern", path)
        behavior = field_of(node, "behavior", str, field, path)
        if behavior not in BEHAVIORS:
            raise _fail(path, f"{field}.behavior", f"{behavior!r} is not one of {BEHAVIORS}")
        invert = field_of(node, "invert", bool, field, path, default=False)
        try:
            return [SplitStep(pattern, behavior, invert, is_regex=keys[0] == "Regex")]
        except ValueError as err:
            raise _fail(path, f"{field}.pattern", str(err)) from None
    if kind == "Digits":
        return [DigitsStep(field_of(node, "individual_digits", bool, field, path, default=False))]
    if kind == "ByteLevel":
        return [ByteLevelStep(
            add_prefix_space=field_of(node, "add_prefix_space", bool, field, path, default=True),
            trim_offsets=field_of(node, "trim_offsets", bool, field, path, default=True),
            use_regex=field_of(node, "use_regex", bool, field, path, default=True),
        )]
    raise _fail(path, f"{field}.type", f"pre-tokenizer {kind!r} is not supported "
                "(Split, Digits, ByteLevel and Sequence are)")


def pre_tokenizer_json(steps: list[Step]) -> dict[str, Any] | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0].to_json()
    return {"type": "Sequence", "pretokenizers": [step.to_json() for step in steps]}
