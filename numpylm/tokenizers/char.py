"""The simplest tokenizer: one id per character, as in a first character-level language model.

The vocabulary is the sorted set of characters seen in a training text, so ids are small and
every id is one visible symbol. Its weakness is what motivates BPE: a character the text never
contained has no id, so it must either become a shared `<unk>` id (losing the character) or
be refused.
"""
from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence

from numpylm.io.config import parse_json
from numpylm.io.text import check_utf8_encodable
from numpylm.tokenizers.base import Tokenizer


class CharTokenizer(Tokenizer):
    """Characters of a fixed alphabet <-> their positions in it.

    `chars` lists the alphabet in id order. With `unk=None` (the default) encoding a
    character outside it raises `ValueError`; with `unk="<unk>"` (or any label) such
    characters become one extra id, `len(chars)`, which decodes to that label.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.encode("hole"), tok.vocab_size
    ([1, 3, 2, 0], 4)
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'
    """

    MAGIC = "numpylm-char"
    VERSION = 1

    def __init__(self, chars: Iterable[str], *, unk: str | None = None) -> None:
        alphabet = list(chars)
        for position, char in enumerate(alphabet):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"alphabet entry {position} is {char!r}, not a single character")
        ids: dict[str, int] = {}
        for position, char in enumerate(alphabet):
            if char in ids:
                raise ValueError(f"character {char!r} appears twice in the alphabet")
            ids[char] = position
        if unk is not None and not isinstance(unk, str):
            raise TypeError(f"unk must be a str label or None, got {type(unk).__name__}")
        self.chars: list[str] = alphabet
        self.unk = unk
        self._ids = ids
        self._unk_id = len(alphabet) if unk is not None else None

    @classmethod
    def from_text(cls, text: str, *, unk: str | None = None) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters in `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (self._unk_id is not None)

    @property
    def unk_id(self) -> int | None:
        """The id unknown characters map to, or None if they raise."""
        return self._unk_id

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        ids = self._ids
        if self._unk_id is not None:
            unk_id = self._unk_id
            return [ids.get(char, unk_id) for char in text]
        try:
            return [ids[char] for char in text]
        except KeyError:
            # Only on failure do we pay for finding where; the happy path stays one comprehension.
            position = next(i for i, char in enumerate(text) if char not in ids)
            raise ValueError(
                f"character {text[position]!r} at position {position} is not in the alphabet "
                f"of this tokenizer (build it with unk='<unk>' to map unknown characters)"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        pieces = self.chars if self._unk_id is None else self.chars + [self.unk]
        out = []
        for token in ids:
            index = operator.index(token)  # ints and NumPy integers; floats raise TypeError
            # An explicit range check: a negative id would otherwise index from the end.
            if not 0 <= index < len(pieces):
                raise ValueError(f"id {index} is outside the vocabulary (size {len(pieces)})")
            out.append(pieces[index])
        return "".join(out)

    def to_string(self) -> str:
        check_utf8_encodable("".join(self.chars), "the tokenizer's alphabet")
        if self.unk is not None:
            check_utf8_encodable(self.unk, "the tokenizer's unk label")
        # Line 3 is a JSON string so that newlines, tabs and any Unicode stay readable and exact.
        return (
            f"{self.MAGIC} {self.VERSION}\n"
            f"unk {json.dumps(self.unk, ensure_ascii=False)}\n"
            f"chars {json.dumps(''.join(self.chars), ensure_ascii=False)}\n"
        )

    @classmethod
    def from_string(cls, text: str) -> CharTokenizer:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != 3:
            raise ValueError(f"a char tokenizer file has 3 lines, this one has {len(lines)}")
        if lines[0] != f"{cls.MAGIC} {cls.VERSION}":
            raise ValueError(f"line 1: expected {cls.MAGIC} {cls.VERSION!r}, got {lines[0][:60]!r}")
        values = []
        for number, key in ((2, "unk"), (3, "chars")):
            line = lines[number - 1]
            if not line.startswith(key + " "):
                raise ValueError(f"line {number}: expected it to start with {key!r}")
            try:
                values.append(parse_json(line[len(key) + 1 :]))
            except ValueError as err:
                raise ValueError(f"line {number}: not a JSON value: {err}") from None
        unk, chars = values
        if not isinstance(chars, str):
            raise ValueError("line 3: chars must be a JSON string")
        if unk is not None and not isinstance(unk, str):
            raise ValueError("line 2: unk must be a JSON string or null")
        try:
            return cls(chars, unk=unk)
        except ValueError as err:
            raise ValueError(f"line 3: {err}") from None
