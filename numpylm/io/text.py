"""UTF-8 text files: reading with errors that name the file (the corpus, tokenizer files),
and writing atomically (`numpylm.io.atomic`).

A Python `str` can hold a lone surrogate (a code point in U+D800..U+DFFF, e.g. from
`"\\ud800"` or a file decoded with `surrogateescape`) that no UTF-8 encoder accepts.
`find_surrogate` and `check_utf8_encodable` say where it is in the *whole* text, once, so
every writer and encoder reports the same clear `ValueError` instead of a `UnicodeEncodeError`
whose position is relative to whatever piece was being encoded.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from numpylm.io.atomic import atomic_write
from numpylm.io.errors import FileFormatError

__all__ = ["check_utf8_encodable", "find_surrogate", "read_utf8", "write_utf8"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def find_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate in `text`, or None if it encodes as UTF-8."""
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def check_utf8_encodable(text: str, what: str = "text") -> None:
    """Raise `ValueError` naming `what` and the position if `text` holds a lone surrogate."""
    position = find_surrogate(text)
    if position is not None:
        raise ValueError(
            f"{what} holds a lone surrogate {text[position]!r} (U+{ord(text[position]):04X}) "
            f"at position {position}; it is not a character and has no UTF-8 encoding")


def read_utf8(path: str | os.PathLike[str], what: str = "text file") -> str:
    """The text of the UTF-8 file at `path`. A missing file raises FileNotFoundError and
    bytes that are not UTF-8 raise FileFormatError (a ValueError), each naming `what` and the path."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no {what} at {str(file)!r}")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        error = FileFormatError(None, f"{what} {str(file)!r} is not UTF-8 text: {err}")
        error.path = str(file)  # named once, in the message's own words
        raise error from None


def write_utf8(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` as UTF-8, atomically: a crash mid-write leaves the old file.

    A lone surrogate is a `ValueError` naming the file and its position; nothing is written.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        check_utf8_encodable(text, f"the text for {os.fspath(path)!r}")
        raise
    with atomic_write(path) as file:
        file.write(data)
