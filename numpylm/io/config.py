"""JSON files for configs and run records: plain text a reader can open, and nothing that executes.

Part of the engine under everything. Model configs (`config.json`, GPT-2 style), training
settings and logs are JSON. Writing is deterministic (sorted keys, two-space indent, UTF-8,
a final newline) so two saves of the same config are byte-identical and diff cleanly, and
atomic (temporary file then rename) like every other write in numpylm. JSON is kept strict:
NaN and infinity are refused on save, since other JSON readers reject them.

Reading is where a file can lie. `parse_json` is the one JSON reader of numpylm (configs,
trainer states, safetensors headers, `vocab.json`): it refuses nesting deeper than
`MAX_JSON_DEPTH` *before* parsing (Python's parser recurses once per level, so a 2 KB file of
`[[[[...` would otherwise end in a RecursionError), and turns every problem into a
`FileFormatError` naming the file. The `require_*` helpers check one field's type and range
and name it, so a `null` or a list where a size belongs is refused at load, not later.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from numpylm.io.errors import FileFormatError
from numpylm.io.text import write_utf8

__all__ = ["MAX_JSON_DEPTH", "json_depth", "load_json", "parse_json", "require_float", "require_int",
           "save_json"]

# No file numpylm reads nests deeper than 4 levels; 64 leaves room for any honest config.
MAX_JSON_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A `json.loads` object hook that refuses a key given twice in one object.

    `json.loads` silently keeps the last of two equal keys; in a safetensors header or a
    vocabulary that would hide an ambiguous file, so it is an error instead.
    """
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice in one JSON object")
        seen[key] = value
    return seen


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON `text` nest (0 for a bare number or string).

    Strings are removed first (a bracket inside a string does not nest), then only brackets
    are kept, so the Python loop runs once per array or object, not once per character.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str, where: str | os.PathLike[str] | None = None, *,
               reject_duplicates: bool = False, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON `text` read from `where`; any problem is a `FileFormatError` naming it.

    Nesting deeper than `max_depth` is refused before the parser sees it. With
    `reject_duplicates`, a key given twice in one object is an error.
    """
    depth = json_depth(text)
    if depth > max_depth:
        raise FileFormatError(where, f"JSON nests {depth} levels deep; at most {max_depth} "
                                     f"are accepted")
    hook = reject_duplicate_keys if reject_duplicates else None
    try:
        return json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        raise FileFormatError(
            where, f"bad JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # a duplicate key; RecursionError cannot happen
        raise FileFormatError(where, str(e) or "JSON too deeply nested") from None


def save_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write `obj` as JSON to `path` atomically: UTF-8, sorted keys, indent 2, trailing newline.

    Raises `TypeError` for values JSON cannot hold and `ValueError` for NaN or infinity;
    in both cases nothing is written.
    """
    # Serialise fully before opening the file, so a bad value never leaves a temporary behind.
    try:
        text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"cannot save {os.fspath(path)!r} as JSON: {e}") from None
    except TypeError as e:
        raise TypeError(f"cannot save {os.fspath(path)!r} as JSON: {e}") from None
    write_utf8(path, text + "\n")


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a UTF-8 JSON file. Bad JSON, bad UTF-8 or too deep nesting is a `FileFormatError`
    (a `ValueError`) naming the file and place."""
    where = os.fspath(path)
    with open(where, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark some editors add
    except UnicodeDecodeError as e:
        raise FileFormatError(where, f"not valid UTF-8 (byte {e.start}): {e.reason}") from None
    return parse_json(text, where)


# ---- one field's type and range ---------------------------------------------------------


def require_int(obj: Mapping[str, Any], key: str, where: str | os.PathLike[str] | None, *,
                low: int | None = None, high: int | None = None, default: Any = ...) -> int:
    """`obj[key]` as an int in [low, high], else a `FileFormatError` naming `where` and `key`.

    JSON `true`/`false` are not ints here, and neither are floats such as 3.0. A missing key
    returns `default` when one is given.
    """
    if key not in obj:
        if default is not ...:
            return default
        raise FileFormatError(where, "missing", field=key)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FileFormatError(where, f"must be an integer, got {_shown(value)}", field=key)
    if (low is not None and value < low) or (high is not None and value > high):
        raise FileFormatError(where, f"{value} is outside [{low}, {high}]", field=key)
    return value


def require_float(obj: Mapping[str, Any], key: str, where: str | os.PathLike[str] | None, *,
                  low: float | None = None, high: float | None = None,
                  low_open: bool = False, default: Any = ...) -> float:
    """`obj[key]` as a finite float in [low, high] ((low, high] with `low_open`)."""
    if key not in obj:
        if default is not ...:
            return default
        raise FileFormatError(where, "missing", field=key)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FileFormatError(where, f"must be a finite number, got {_shown(value)}", field=key)
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        bracket = "(" if low_open else "["
        raise FileFormatError(where, f"{value} is outside {bracket}{low}, {high}]", field=key)
    return float(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
