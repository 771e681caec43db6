"""JSON files for configs and run records: plain text a reader can open, and nothing that executes.

Part of the engine under everything. Model configs (`config.json`, GPT-2 style), training
settings and logs are JSON. Writing is deterministic (sorted keys, two-space indent, UTF-8,
a final newline) so two saves of the same config are byte-identical and diff cleanly, and
atomic (temporary file then rename) like every other write in numpylm. JSON is kept strict:
NaN and infinity are refused on save, since other JSON readers reject them.
"""
from __future__ import annotations

import json
import os
from typing import Any

from numpylm.io.text import write_utf8

__all__ = ["load_json", "save_json"]


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
    """Read a UTF-8 JSON file. Bad JSON or bad UTF-8 is a `ValueError` naming the file and place."""
    where = os.fspath(path)
    with open(where, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark some editors add
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not valid UTF-8 (byte {e.start}): {e.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where}: bad JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
