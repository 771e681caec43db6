"""The one error class for files that are not what they claim to be.

Every reader in numpylm (safetensors, JSON configs, tokenizer files, checkpoints, GGUF)
raises `FileFormatError` when a file is malformed, lies about its sizes, or holds a value of
the wrong type or range. It is a `ValueError`, so `except ValueError` keeps working, and its
message names the file and, where there is one, the field: a user reads what is wrong and
where without a traceback into numpy.
"""
from __future__ import annotations

import os

__all__ = ["FileFormatError"]


class FileFormatError(ValueError):
    """A file that is malformed, truncated, or holds a value of the wrong type or range.

    `FileFormatError(path, "what is wrong", field="header.n_tensors")` reads
    "path: header.n_tensors: what is wrong"; `path` and `field` are kept as attributes.
    """

    def __init__(self, path: str | os.PathLike[str] | None, message: str,
                 field: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        parts = [p for p in (self.path, field) if p]
        super().__init__(": ".join([*parts, message]))
