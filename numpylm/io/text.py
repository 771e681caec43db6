"""Reading a UTF-8 text file with errors that name it: the corpus, tokenizer files."""
from __future__ import annotations

import os
from pathlib import Path


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
