"""UTF-8 text files: reading with errors that name the file (the corpus, tokenizer files),
and writing atomically (`numpylm.io.atomic`)."""
from __future__ import annotations

import os
from pathlib import Path

from numpylm.io.atomic import atomic_write


def read_utf8(path: str | os.PathLike[str], what: str = "text file") -> str:
    """The text of the UTF-8 file at `path`. A missing file raises FileNotFoundError and
    bytes that are not UTF-8 raise ValueError, each naming `what` and the path."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no {what} at {str(file)!r}")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {str(file)!r} is not UTF-8 text: {err}") from None


def write_utf8(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` as UTF-8, atomically: a crash mid-write leaves the old file."""
    with atomic_write(path) as file:
        file.write(text.encode("utf-8"))
