"""The text every example starts from: Python's own reference manual, or any UTF-8 file.

Every CPython ships the text of its language reference as `pydoc_data.topics` (the pages
`help()` shows), so numpylm has a few hundred kilobytes of real English prose and code to
train on without a download.
"""
from __future__ import annotations

import os

from numpylm.io.text import read_utf8


def embedded_corpus() -> str:
    """Return the embedded corpus: the values of `pydoc_data.topics.topics`, joined.

    The topics are joined in sorted key order so the text is the same on every run
    (about 465 KB of UTF-8 on CPython 3.11).
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def read_text(path: str | os.PathLike[str] | None = None) -> str:
    """Return the text of the UTF-8 file at `path`, or the embedded corpus if `path` is None."""
    if path is None:
        return embedded_corpus()
    return read_utf8(path, "text file")
