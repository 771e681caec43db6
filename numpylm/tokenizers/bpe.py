"""Byte-level BPE, the tokenizer of GPT-2 and its successors: any text, a fixed vocabulary.

Text is UTF-8 bytes, so 256 base ids cover every string ever written and nothing is unknown.
Training (`bpe_train.py`) learns merges, pairs of ids that become one new id; encoding cuts
text into chunks with a split pattern (`patterns.py`) and, inside each chunk, replays the
merges: repeatedly merge the adjacent pair that was learned earliest (has the lowest rank).

Speed comes from one observation: real text repeats its chunks (" the", ",", "\\n" ...), so each
distinct chunk is encoded once and cached. A chunk that is itself a whole token (most of them
with a large vocabulary) is looked up directly; only the rest go through the merge loop.

The merging itself is in `bpe_merge.py`: three ways to merge one chunk, proven equal by
tests, `replay_merges` (the definition), `apply_merges` (short chunks) and `merge_long`
(chunks over `_LONG_CHUNK` bytes, O(n log n)). A split pattern that is not one of ours (from a
file) is checked once on a probe text (`patterns.check_split_pattern`), so that it cannot skip
characters, and runs under the regex module's timeout.
"""
from __future__ import annotations

import json
import numbers
import operator
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import chain
from typing import Callable, Literal

import numpy as np
from numpylm.io.text import check_utf8_encodable, find_surrogate
from numpylm.tokenizers.base import Tokenizer
from numpylm.tokenizers.bpe_train import train_merges_fast, train_merges_plain
from numpylm.tokenizers.bpe_merge import MAX_ID, MergeTable, apply_merges, merge_long
from numpylm.tokenizers.patterns import (BUILTIN_PATTERNS, GPT2_PATTERN, GPT4_PATTERN,
                                       check_split_pattern,
                                       compile_pattern, findall_limited)

_CACHE_LIMIT = 100_000  # distinct chunks kept; the cache is emptied when it is full
# Chunks longer than this many bytes are merged by `merge_long` (NumPy, O(n log n)); below it
# the plain loop of `apply_merges` is faster. Longer chunks are not cached either: a 10 MB
# line of base64 will not come again, and would pin its memory in the cache.
_LONG_CHUNK = 256

SpecialTokens = Mapping[str, int] | Iterable[str] | None


def show_bytes(data: bytes) -> str:
    """A token's bytes as readable text: UTF-8 where valid, `\\xNN` for stray bytes."""
    return data.decode("utf-8", errors="backslashreplace")


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: a split pattern, byte ids, ranked merges, special tokens.

    `merges` lists `(left, right, new_id)` in rank order (rank 0 is merged first). `byte_ids[b]`
    is the id of byte `b` (default: `b` itself; GPT-2's files use another order). Usually built
    by `train`, `load`, `from_tiktoken` or `from_hf` rather than directly.
    """

    MAGIC = "numpylm-bpe"
    VERSION = 1

    def __init__(
        self,
        merges: Iterable[tuple[int, int, int]],
        *,
        byte_ids: Sequence[int] | None = None,
        pattern: str = GPT4_PATTERN,
        special_tokens: Mapping[str, int] | None = None,
        _where: Callable[[int], str] | None = None,
        _trusted: bool = False,
    ) -> None:
        where = _where or (lambda rank: f"merge {rank}")
        self.pattern = pattern
        self._regex = compile_pattern(pattern)
        # A pattern of our own is known to be linear and complete; any other is checked once.
        self._builtin_pattern = pattern in BUILTIN_PATTERNS
        if not self._builtin_pattern:
            check_split_pattern(pattern)
        self._byte_ids = _check_byte_ids(byte_ids)
        self._identity_bytes = self._byte_ids == list(range(256))
        token_bytes, owner, self._merges = _read_merges(merges, self._byte_ids, where)
        self._pair_rank = {(left, right): rank for rank, (left, right, _) in enumerate(self._merges)}
        self._merged_id = [new for _, _, new in self._merges]
        self._token_bytes = token_bytes
        self._special = _read_special_tokens(special_tokens, token_bytes)
        self._decoder = dict(token_bytes)
        self._decoder.update((i, text.encode("utf-8")) for text, i in self._special.items())
        self._vocab_size = max(self._decoder) + 1

        # Chunks that are a whole token are looked up, not merged. That is exact only when
        # merging the token's bytes alone ends in that token, which a trained tokenizer
        # guarantees; for tables read from a file it is checked here, token by token.
        self._whole = owner if _trusted else self._whole_tokens()
        self._cache: dict[str, tuple[int, ...]] = {}
        self._merge_table: MergeTable | None = None  # built on the first long chunk

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str = GPT4_PATTERN,
        special_tokens: SpecialTokens = None,
        *,
        algorithm: Literal["fast", "plain"] = "fast",
    ) -> BPETokenizer:
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `text`.

        `special_tokens` is a list of strings (ids follow the learned tokens) or a mapping
        from string to id. Their text in `text` is a boundary and is not learned from.
        `algorithm` picks the trainer; both give identical merges (see `bpe_train.py`).
        If every chunk becomes a single token before enough merges are learned, training
        stops early and `vocab_size` is smaller than asked.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        trainer = {"fast": train_merges_fast, "plain": train_merges_plain}.get(algorithm)
        if trainer is None:
            raise ValueError(f"algorithm must be 'fast' or 'plain', got {algorithm!r}")
        names = _special_names(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        vocab_size = int(vocab_size)
        if vocab_size < 256 + len(names):
            raise ValueError(
                f"vocab_size={vocab_size!r} is below 256 byte tokens + {len(names)} special tokens"
            )
        regex = compile_pattern(pattern)
        pieces = _split_specials(text, names) if names else [text]
        chunks = [chunk for piece in pieces for chunk in regex.findall(piece)]
        pairs = trainer(chunks, vocab_size - 256 - len(names))
        merges = [(left, right, 256 + rank) for rank, (left, right) in enumerate(pairs)]
        if isinstance(special_tokens, Mapping):
            specials = dict(special_tokens)
        else:
            specials = {name: 256 + len(merges) + i for i, name in enumerate(names)}
        return cls(merges, pattern=pattern, special_tokens=specials, _trusted=True)

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike[str],
        pattern: str = GPT2_PATTERN,
        special_tokens: SpecialTokens = None,
    ) -> BPETokenizer:
        """Read a tiktoken `.tiktoken` rank file (`base64-token rank` per line)."""
        from numpylm.tokenizers.interchange import read_tiktoken

        return read_tiktoken(path, pattern=pattern, special_tokens=special_tokens)

    @classmethod
    def from_hf(
        cls,
        vocab_json: str | os.PathLike[str],
        merges_txt: str | os.PathLike[str],
        pattern: str = GPT2_PATTERN,
    ) -> BPETokenizer:
        """Read GPT-2's `vocab.json` + `merges.txt`; entries that no merge makes are special."""
        from numpylm.tokenizers.interchange import read_hf

        return read_hf(vocab_json, merges_txt, pattern=pattern)

    def to_hf(self, directory: str | os.PathLike[str]) -> None:
        """Write `vocab.json` and `merges.txt` in GPT-2's format into `directory`."""
        from numpylm.tokenizers.interchange import write_hf

        write_hf(self, directory)

    def to_tiktoken(self, path: str | os.PathLike[str]) -> None:
        """Write the ordinary tokens as a tiktoken rank file (special tokens are not part of it)."""
        from numpylm.tokenizers.interchange import write_tiktoken

        write_tiktoken(self, path)

    def _whole_tokens(self) -> dict[bytes, int]:
        whole = {bytes([b]): i for b, i in enumerate(self._byte_ids)}
        pair_rank: dict[tuple[int, int], int] = {}
        for rank, (left, right, new) in enumerate(self._merges):
            data = self._token_bytes[new]
            if apply_merges(self._bytes_to_ids(data), pair_rank, self._merged_id) == [left, right]:
                whole[data] = new
            pair_rank[(left, right)] = rank
        return whole

    # ---- the vocabulary -----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        """`(left, right, new_id)` in rank order."""
        return list(self._merges)

    @property
    def byte_ids(self) -> list[int]:
        """`byte_ids[b]` is the id of the one-byte token `b`."""
        return list(self._byte_ids)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Ordinary tokens as `{bytes: id}`, the table tiktoken's `Encoding` takes."""
        return {data: i for i, data in self._token_bytes.items()}

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one id (a special token's are its UTF-8 text)."""
        try:
            return self._decoder[token]
        except (KeyError, TypeError):
            raise ValueError(f"id {token!r} is not in the vocabulary") from None

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={len(self._special)})"
        )

    # ---- encoding -----------------------------------------------------------------------

    def _bytes_to_ids(self, data: bytes) -> list[int]:
        if self._identity_bytes:
            return list(data)
        byte_ids = self._byte_ids
        return [byte_ids[b] for b in data]

    def _encode_new_chunk(self, chunk: str) -> tuple[int, ...]:
        data = chunk.encode("utf-8")
        token = self._whole.get(data)
        if token is not None:
            ids: tuple[int, ...] = (token,)
        elif len(data) > _LONG_CHUNK:
            if self._merge_table is None:
                self._merge_table = MergeTable(self._pair_rank, self._merged_id)
            byte_ids = np.asarray(self._byte_ids, dtype=np.int64)
            return tuple(merge_long(byte_ids[np.frombuffer(data, np.uint8)], self._merge_table))
        else:
            ids = tuple(apply_merges(self._bytes_to_ids(data), self._pair_rank, self._merged_id))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token text as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        # One regex pass over the whole text, then a dict lookup per chunk: the cache
        # answers almost every chunk of real text.
        cached = self._cache.get
        new = self._encode_new_chunk
        chunks = self._split(text)
        try:
            return list(chain.from_iterable([cached(chunk) or new(chunk) for chunk in chunks]))
        except UnicodeEncodeError:
            check_utf8_encodable(text, "the text to encode")  # names the position in `text`
            raise

    def _split(self, text: str) -> list[str]:
        """The chunks of `text`; a pattern from a file runs under a timeout."""
        if self._builtin_pattern:
            return self._regex.findall(text)
        return findall_limited(self._regex, text, self.pattern)

    def encode(
        self,
        text: str,
        *,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Encode `text` with tiktoken's rules for special tokens.

        Special tokens in `allowed_special` (or all of them, with `"all"`) become their ids.
        Text of a token in `disallowed_special` raises `ValueError`; the default `"all"` means
        every special token not allowed, so special-token text never slips in silently.
        Pass `disallowed_special=()` to encode such text as ordinary text.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        allowed = set(self._special) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - self._special.keys()
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens: {sorted(unknown)}")
        if disallowed_special == "all":
            disallowed = self._special.keys() - allowed
        else:
            disallowed = set(disallowed_special)
        for name in disallowed:
            if name in text:  # a substring search in C: cheap even on long texts
                how = ""
                if name in self._special:
                    token = self._special[name]
                    how = f"allowed_special={{{name!r}}} to encode it as id {token}, or "
                raise ValueError(
                    f"text contains the disallowed special token {name!r} at position "
                    f"{text.index(name)}; pass {how}disallowed_special=() to encode it as text"
                )
        if not allowed or not any(name in text for name in allowed):
            return self.encode_ordinary(text)
        ids: list[int] = []
        for i, piece in enumerate(_split_specials(text, allowed, keep=True)):
            if i % 2:
                ids.append(self._special[piece])
            elif piece and find_surrogate(piece) is not None:
                check_utf8_encodable(text, "the text to encode")  # the position in `text`
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    # ---- decoding -----------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids` joined; an id outside the vocabulary raises `ValueError`."""
        decoder = self._decoder
        ids = list(ids)
        try:
            return b"".join([decoder[token] for token in ids])
        except (KeyError, TypeError):
            bad = next(token for token in ids if not _hashable(token) or token not in decoder)
            message = f"id {bad!r} is not in the vocabulary (size {self.vocab_size})"
            raise ValueError(message) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`. A token can end mid-character; bytes that are not valid UTF-8
        become U+FFFD, as in tiktoken and GPT-2's own decoder."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- numpylm's own file format ------------------------------------------------------

    def to_string(self) -> str:
        lines = [
            f"{self.MAGIC} {self.VERSION}",
            "# Byte-level BPE. Lines: the split pattern (JSON); the ids of bytes 0..255;",
            "# special tokens (id, JSON text); merges in rank order as `left right new`.",
            "# After a merge, `#` and the new token's text, for reading only.",
            f"pattern {json.dumps(self.pattern, ensure_ascii=False)}",
            "bytes " + ("identity" if self._identity_bytes else " ".join(map(str, self._byte_ids))),
        ]
        for text, token in sorted(self._special.items(), key=lambda item: item[1]):
            lines.append(f"special {token} {json.dumps(text, ensure_ascii=False)}")
        for left, right, new in self._merges:
            shown = json.dumps(show_bytes(self._token_bytes[new]), ensure_ascii=False)
            lines.append(f"merge {left} {right} {new}  # {shown}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_string(cls, text: str) -> BPETokenizer:
        from numpylm.tokenizers.interchange import parse_numpylm_bpe

        return parse_numpylm_bpe(text)


def _read_merges(merges: Iterable[tuple[int, int, int]], byte_ids: list[int],
                 where: Callable[[int], str]
                 ) -> tuple[dict[int, bytes], dict[bytes, int], list[tuple[int, int, int]]]:
    """Check the merges in rank order; return each id's bytes, the id of each token's bytes
    and the merges as int triples. Every merge must join two known ids into a new id whose
    bytes no other id has: a table that lies is refused here, naming the merge."""
    token_bytes: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids)}
    owner: dict[bytes, int] = {data: i for i, data in token_bytes.items()}
    checked: list[tuple[int, int, int]] = []
    pairs: set[tuple[int, int]] = set()
    for rank, merge in enumerate(merges):
        left, right, new = (int(x) for x in merge)
        for part in (left, right):
            if part not in token_bytes:
                raise ValueError(f"{where(rank)}: id {part} is not a byte or an earlier merge")
        if new < 0 or new in token_bytes or new >= MAX_ID:
            raise ValueError(f"{where(rank)}: new id {new} is negative, already used or "
                             f"above {MAX_ID - 1}")
        if (left, right) in pairs:
            raise ValueError(f"{where(rank)}: the pair ({left}, {right}) is merged twice")
        data = token_bytes[left] + token_bytes[right]
        if data in owner:
            raise ValueError(f"{where(rank)}: token {show_bytes(data)!r} duplicates id "
                             f"{owner[data]}")
        token_bytes[new] = data
        owner[data] = new
        pairs.add((left, right))
        checked.append((left, right, new))
    return token_bytes, owner, checked


def _read_special_tokens(special_tokens: Mapping[str, int] | None,
                         token_bytes: Mapping[int, bytes]) -> dict[str, int]:
    """Special tokens as {text: id}, each a non-empty str with an id no other token has."""
    special: dict[str, int] = {}
    for text, token in (special_tokens or {}).items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"special token {text!r} must be a non-empty str")
        token = operator.index(token)
        if token < 0 or token >= MAX_ID or token in token_bytes or token in special.values():
            raise ValueError(f"special token {text!r} has id {token}: negative, used or "
                             f"above {MAX_ID - 1}")
        special[text] = token
    return special


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _check_byte_ids(byte_ids: Sequence[int] | None) -> list[int]:
    if byte_ids is None:
        return list(range(256))
    ids = [int(i) for i in byte_ids]
    if len(ids) != 256 or len(set(ids)) != 256 or min(ids) < 0 or max(ids) >= MAX_ID:
        raise ValueError(f"byte_ids must hold 256 distinct ids in [0, {MAX_ID}), one per byte "
                         f"value")
    return ids


def _special_names(special_tokens: SpecialTokens) -> list[str]:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a list of strings or a mapping, not one str")
    names = list(special_tokens)
    if len(set(names)) != len(names):
        raise ValueError(f"special_tokens repeats a token: {names}")
    return names


def _split_specials(text: str, names: Iterable[str], keep: bool = False) -> list[str]:
    """Split `text` at occurrences of `names` (longest first); with `keep`, odd items are them."""
    import regex

    alternatives = "|".join(regex.escape(name) for name in sorted(names, key=len, reverse=True))
    return regex.split(f"({alternatives})" if keep else alternatives, text)


