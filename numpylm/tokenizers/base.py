"""The one interface every tokenizer shares: text to a list of ids and back.

A language model only ever sees integers. A tokenizer fixes which integers: `encode` maps
text to ids in `range(vocab_size)`, `decode` maps ids back to text, and `save`/`load` keep the
mapping next to the model, because a model is meaningless with any other tokenizer.
Each kind writes a small human-readable text file whose first line names the kind, so
`load_tokenizer` can tell which class to read it with.
"""
from __future__ import annotations

import abc
import os
from typing import ClassVar, TypeVar

from numpylm.io.errors import FileFormatError
from numpylm.io.text import read_utf8, write_utf8

T = TypeVar("T", bound="Tokenizer")


class Tokenizer(abc.ABC):
    """Text <-> ids. Subclasses implement the members below; `save`/`load` come with them."""

    # The start of line 1 of the kind's file format; `load_tokenizer` dispatches on it.
    MAGIC: ClassVar[str]

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Return the ids of `text`."""

    @abc.abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Return the text of `ids`; an id outside the vocabulary raises `ValueError`."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """One more than the largest id `encode` can return."""

    @abc.abstractmethod
    def to_string(self) -> str:
        """The tokenizer in its human-readable file format."""

    @classmethod
    @abc.abstractmethod
    def from_string(cls: type[T], text: str) -> T:
        """Read a tokenizer from the text `to_string` wrote."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer to `path` (UTF-8 text).

        The file is written under a temporary name and renamed (`numpylm.io.atomic`), so a
        crash mid-write leaves any previous file at `path` intact.
        """
        write_utf8(path, self.to_string())

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Read a tokenizer that `save` wrote."""
        return _parse_file(path, cls.from_string)


def _parse_file(path: str | os.PathLike[str], parse):
    """`parse` applied to the text of the tokenizer file at `path`; a parse error is a
    `FileFormatError` naming the file (reading errors already are)."""
    text = read_utf8(path, "tokenizer file")
    try:
        return parse(text)
    except FileFormatError:
        raise
    except ValueError as err:
        error = FileFormatError(None, f"{str(path)!r}: {err}")
        error.path = str(path)
        raise error from None


def tokenizer_from_string(text: str) -> Tokenizer:
    """Read any numpylm tokenizer from its file text, choosing the class by the first line."""
    from numpylm.tokenizers.bpe import BPETokenizer
    from numpylm.tokenizers.char import CharTokenizer

    first_line = text.split("\n", 1)[0].strip()
    for cls in (CharTokenizer, BPETokenizer):
        if first_line.startswith(cls.MAGIC):
            return cls.from_string(text)
    raise ValueError(
        f"not a numpylm tokenizer file: line 1 is {first_line[:60]!r}, expected it to start "
        f"with {CharTokenizer.MAGIC!r} or {BPETokenizer.MAGIC!r}"
    )


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer saved by any numpylm tokenizer's `save`, detecting its kind."""
    return _parse_file(path, tokenizer_from_string)
