"""Byte-level BPE, the tokenizer of GPT-2 and its successors: any text, a fixed vocabulary.

Text is UTF-8 bytes, so 256 base ids cover every string ever written and nothing is unknown.
Training (`bpe_train.py`) learns merges, pairs of ids that become one new id; encoding cuts
text into chunks with a split pattern (`patterns.py`) and, inside each chunk, replays the
merges: repeatedly merge the adjacent pair that was learned earliest (has the lowest rank).

Speed comes from one observation: real text repeats its chunks (" the", ",", "\\n" ...), so each
distinct chunk is encoded once and cached. A chunk that is itself a whole token (most of them
with a large vocabulary) is looked up directly; only the rest go through the merge loop.

Three ways to merge one chunk, proven equal by tests: `replay_merges` (the definition: every
merge in rank order), `apply_merges` (a loop over the pairs present, for short chunks) and
`merge_long` (whole ranks at a time with NumPy, O(n log n), for chunks over `_LONG_CHUNK`
bytes: a 10 MB line without spaces, where the loop would take hours).

A split pattern that is not one of ours (from a file) is checked once on a probe text, so
that it cannot skip characters, and runs under the regex module's timeout.
"""
from __future__ import annotations

import heapq
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
from numpylm.tokenizers.bpe_train import merge_pair, train_merges_fast, train_merges_plain
from numpylm.tokenizers.patterns import GPT2_PATTERN, GPT4_PATTERN, compile_pattern

MAX_ID = 1 << 24  # 16.7M: above any real vocabulary, below what an embedding can hold
_NO_RANK = 1 << 62  # larger than any rank: "this pair is not a merge"
_CACHE_LIMIT = 100_000  # distinct chunks kept; the cache is emptied when it is full
# Chunks longer than this many bytes are merged by `merge_long` (NumPy, O(n log n)); below it
# the plain loop of `apply_merges` is faster. Longer chunks are not cached either: a 10 MB
# line of base64 will not come again, and would pin its memory in the cache.
_LONG_CHUNK = 256
_SLOT_BITS = 39  # merge_long packs (rank, slot) in one int64: slots below 2^39, ranks 2^24
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_DENSE = 256  # MergeTable.rank_of looks pairs of ids below this up in one 256 x 256 table
# A split pattern read from a file runs under the regex module's timeout: this many seconds
# plus this many per character, far above what an ordinary pattern needs.
_PATTERN_SECONDS, _PATTERN_SECONDS_PER_CHAR = 1.0, 2e-6
_BUILTIN_PATTERNS = (GPT2_PATTERN, GPT4_PATTERN)
# Letters, digits, punctuation, spaces, newlines, tabs, CR, accents, CJK, emoji, a zero-width
# joiner and long runs: a split pattern must hand every character of it to some chunk.
_PROBE = ("Hello world, it's 2024!\n\tTabs\r\nand  spaces   x  \n\n"
          "Ünïcödé café naïve 東京 Ελληνικά русский עברית 🙂👩\u200d💻 ∑x² ½ ' \" `~$\x00\x7f "
          "I'M WE'LL they've a--b 3.14159 1,000,000 " + "a" * 40 + "!" + "9" * 40 + " " * 20 + "z")

SpecialTokens = Mapping[str, int] | Iterable[str] | None


def apply_merges(
    ids: list[int], pair_rank: Mapping[tuple[int, int], int], merged_id: Sequence[int]
) -> list[int]:
    """Merge `ids` (one chunk) in place by rank: the lowest-ranked adjacent pair first.

    `pair_rank[(left, right)]` is the merge's rank (its position in the merge list) and
    `merged_id[rank]` the id it creates. Equal ranks (the same pair twice) merge leftmost
    first, which is also what replaying merge after merge over the chunk would give.
    `ranks[i]` holds the rank of the pair (ids[i], ids[i+1]); after a merge at i only the two
    neighbouring entries change, so each step is a `min` and an `index`, both in C.
    """
    get = pair_rank.get
    ranks = [get(pair, _NO_RANK) for pair in zip(ids, ids[1:])]
    while ranks:
        best = min(ranks)
        if best == _NO_RANK:
            break
        i = ranks.index(best)
        ids[i] = merged_id[best]
        del ids[i + 1]
        del ranks[i]
        if i > 0:
            ranks[i - 1] = get((ids[i - 1], ids[i]), _NO_RANK)
        if i < len(ranks):
            ranks[i] = get((ids[i], ids[i + 1]), _NO_RANK)
    return ids


class MergeTable:
    """The merge list as sorted arrays, for merging a long chunk with NumPy (`merge_long`).

    A pair (left, right) is packed into one int64 key `left * base + right`; `keys` is sorted
    and `ranks[i]` is the rank of `keys[i]`, so looking up every pair of a chunk is one
    `searchsorted`. `left`, `right` and `new` are indexed by rank.
    """

    def __init__(self, pair_rank: Mapping[tuple[int, int], int], merged_id: Sequence[int]) -> None:
        pairs = sorted(pair_rank.items(), key=lambda item: item[1])
        ids = [i for (left, right), _ in pairs for i in (left, right)] + list(merged_id)
        self.base = max(ids, default=0) + 1
        self.left = np.array([left for (left, _), _ in pairs], dtype=np.int64)
        self.right = np.array([right for (_, right), _ in pairs], dtype=np.int64)
        self.new = np.asarray(merged_id, dtype=np.int64)
        keys = self.left * self.base + self.right
        order = np.argsort(keys)
        self.keys = keys[order]
        self.ranks = np.array([rank for _, rank in pairs], dtype=np.int64)[order]
        self._dense: np.ndarray | None = None  # ranks of all pairs of ids below _DENSE

    def rank_of(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The rank of each pair (left[i], right[i]), `_NO_RANK` where it is not a merge."""
        if not len(self.keys):
            return np.full(len(left), _NO_RANK, dtype=np.int64)
        if len(left) > _DENSE * _DENSE and max(left.max(), right.max()) < _DENSE:
            # The first look at a long chunk: byte ids only. One table of every pair of
            # small ids is cheaper than a binary search per pair.
            if self._dense is None:
                small = np.arange(_DENSE, dtype=np.int64)
                grid = self.rank_of(np.repeat(small, _DENSE), np.tile(small, _DENSE))
                self._dense = grid.reshape(_DENSE, _DENSE)
            return self._dense[left, right]
        keys = left * self.base + right
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[at] == keys, self.ranks[at], _NO_RANK)


def merge_long(ids: Sequence[int] | np.ndarray, table: MergeTable) -> list[int]:
    """`apply_merges` for a long chunk, in O(n log n): whole ranks at a time, with NumPy.

    Why a whole rank at once is exact: a merge creates a new id, and every merge that uses
    that id was learned after it (has a higher rank). So once r is the lowest rank present,
    it stays the lowest until every occurrence of its pair is merged; merging them all
    together, left to right, is what merging them one by one would do. Only a pair (x, x) can
    overlap itself (x x x): in such a run the 1st, 3rd, 5th ... occurrences are merged.

    The chunk stays in place as a linked list (`nxt`, `prv`; merged-away slots are dead). A
    heap holds the ranks waiting to be merged and `waiting[rank]` the slots where that pair
    was seen; an entry that a later merge invalidated is dropped when its rank comes up
    (lazy invalidation), so each slot is touched O(1) times per merge next to it.
    """
    ids = np.array(ids, dtype=np.int64)
    n = len(ids)
    if n < 2 or not len(table.keys):
        return ids.tolist()
    if n >= 1 << _SLOT_BITS:
        raise ValueError(f"a chunk of {n} bytes is too long to merge (at most 2^{_SLOT_BITS})")
    nxt = np.arange(1, n + 1, dtype=np.int64)
    nxt[-1] = -1
    prv = np.arange(-1, n - 1, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    waiting: dict[int, list[np.ndarray]] = {}
    heap: list[int] = []

    def enqueue(slots: np.ndarray, ranks: np.ndarray) -> None:
        keep = ranks != _NO_RANK
        slots, ranks = slots[keep], ranks[keep]
        if not len(slots):
            return
        # One sort of (rank, slot) packed in an int64 groups the slots by rank, each group
        # in slot order; ranks are below MAX_ID = 2^24 and slots below 2^39.
        packed = np.sort((ranks << _SLOT_BITS) | slots)
        packed = packed[np.concatenate([[True], packed[1:] != packed[:-1]])]  # queued twice
        ranks, slots = packed >> _SLOT_BITS, packed & _SLOT_MASK
        starts = np.flatnonzero(np.concatenate([[True], ranks[1:] != ranks[:-1]]))
        for rank, part in zip(ranks[starts].tolist(), np.split(slots, starts[1:])):
            if rank not in waiting:
                waiting[rank] = []
                heapq.heappush(heap, rank)
            waiting[rank].append(part)

    first = np.arange(n - 1, dtype=np.int64)
    enqueue(first, table.rank_of(ids[:-1], ids[1:]))
    while heap:
        rank = heapq.heappop(heap)
        parts = waiting.pop(rank)
        slots = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
        left, right = table.left[rank], table.right[rank]
        # Lazy invalidation: keep the slots that still hold the pair.
        slots = slots[alive[slots] & (nxt[slots] >= 0)]
        slots = slots[(ids[slots] == left) & (ids[nxt[slots]] == right)]
        if left == right and len(slots) > 1:
            # Runs of overlapping occurrences: keep every other one, starting at the run's first.
            starts_run = np.ones(len(slots), dtype=bool)
            starts_run[1:] = nxt[slots[:-1]] != slots[1:]
            run_start = np.maximum.accumulate(np.where(starts_run, np.arange(len(slots)), 0))
            slots = slots[(np.arange(len(slots)) - run_start) % 2 == 0]
        if not len(slots):
            continue
        gone = nxt[slots]  # the right halves, merged into their left neighbours
        after = nxt[gone]
        ids[slots] = table.new[rank]
        alive[gone] = False
        nxt[slots] = after
        linked = after >= 0
        prv[after[linked]] = slots[linked]
        # The new id forms a new pair with each neighbour; their ranks are all above `rank`.
        before = prv[slots]
        has_before = before >= 0
        lefts = before[has_before]
        rights = slots[nxt[slots] >= 0]
        pair_slots = np.concatenate([lefts, rights])
        enqueue(pair_slots, table.rank_of(ids[pair_slots], ids[nxt[pair_slots]]))
    return ids[alive].tolist()


def replay_merges(ids: list[int], merges: Iterable[tuple[int, int, int]]) -> list[int]:
    """The readable twin of `apply_merges`: replay every merge, in rank order, over one chunk.

    This is encoding by definition, and takes time proportional to the whole merge list for
    every chunk; `apply_merges` only ever looks at the pairs present. Tests show they agree.
    """
    for left, right, new in merges:
        ids = merge_pair(ids, (left, right), new)
    return ids


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
        self._builtin_pattern = pattern in _BUILTIN_PATTERNS
        if not self._builtin_pattern:
            check_split_pattern(pattern)
        self._byte_ids = _check_byte_ids(byte_ids)
        self._identity_bytes = self._byte_ids == list(range(256))
        token_bytes: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self._byte_ids)}
        owner: dict[bytes, int] = {data: i for i, data in token_bytes.items()}
        self._merges: list[tuple[int, int, int]] = []
        self._pair_rank: dict[tuple[int, int], int] = {}
        self._merged_id: list[int] = []
        for rank, merge in enumerate(merges):
            left, right, new = (int(x) for x in merge)
            for part in (left, right):
                if part not in token_bytes:
                    raise ValueError(f"{where(rank)}: id {part} is not a byte or an earlier merge")
            if new < 0 or new in token_bytes or new >= MAX_ID:
                raise ValueError(f"{where(rank)}: new id {new} is negative, already used or "
                                 f"above {MAX_ID - 1}")
            if (left, right) in self._pair_rank:
                raise ValueError(f"{where(rank)}: the pair ({left}, {right}) is merged twice")
            data = token_bytes[left] + token_bytes[right]
            if data in owner:
                raise ValueError(
                    f"{where(rank)}: token {show_bytes(data)!r} duplicates id {owner[data]}"
                )
            token_bytes[new] = data
            owner[data] = new
            self._pair_rank[(left, right)] = rank
            self._merged_id.append(new)
            self._merges.append((left, right, new))
        self._token_bytes = token_bytes

        self._special: dict[str, int] = {}
        for text, token in (special_tokens or {}).items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special token {text!r} must be a non-empty str")
            token = operator.index(token)
            if (token < 0 or token >= MAX_ID or token in token_bytes
                    or token in self._special.values()):
                raise ValueError(f"special token {text!r} has id {token}: negative, used or "
                                 f"above {MAX_ID - 1}")
            self._special[text] = token
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


def findall_limited(compiled, text: str, pattern: str, seconds: float | None = None) -> list[str]:
    """`compiled.findall(text)` under the regex module's timeout (see `_PATTERN_SECONDS`).

    A pattern such as `(a|aa)+$` backtracks exponentially: on 40 characters it would run for
    minutes. Patterns from files are not trusted to be linear, so they get a time budget and
    a clear error when they exceed it.
    """
    budget = seconds or _PATTERN_SECONDS + _PATTERN_SECONDS_PER_CHAR * len(text)
    try:
        return compiled.findall(text, timeout=budget)
    except TimeoutError:
        raise ValueError(f"the split pattern {pattern[:80]!r} took over {budget:.1f} s on "
                         f"{len(text)} characters (catastrophic backtracking?)") from None


def check_split_pattern(pattern: str) -> None:
    """Refuse a split pattern that is too slow or skips characters, run on `_PROBE`.

    Encoding drops what the pattern does not match, so a pattern that skips a character
    silently breaks `decode(encode(s)) == s`; a pattern with capture groups makes `findall`
    return the groups instead of the chunks. Both are caught here, at load, on a probe text.
    """
    compiled = compile_pattern(pattern)
    if compiled.groups:
        raise ValueError(f"the split pattern {pattern[:80]!r} has capture groups; use (?:...) "
                         f"so that each match is a whole chunk")
    covered = "".join(findall_limited(compiled, _PROBE, pattern, seconds=0.2))
    if covered != _PROBE:
        at = next((i for i, (a, b) in enumerate(zip(covered, _PROBE)) if a != b),
                  min(len(covered), len(_PROBE)))
        raise ValueError(f"the split pattern {pattern[:80]!r} skips characters: on the probe "
                         f"text it first drops {_PROBE[at]!r} at position {at}, so decoding "
                         f"would not give the text back")
