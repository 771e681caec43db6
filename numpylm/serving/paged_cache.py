"""The paged KV cache, part 3 of the guide: how one pool of memory holds the keys and values of
many sequences of unknown length (Kwon et al. 2023, "PagedAttention").

A contiguous cache (`numpylm.models.kv_cache`) reserves `block_size` positions for every
sequence up front: a server answering 32 people with a 2048-token model would reserve 65,536
positions even when most answers stop after 50 tokens. A paged cache cuts memory into fixed
blocks of `page_size` token slots, as an operating system pages memory:

- one pool of blocks is allocated once, (n_layer, Hkv, num_blocks * page_size, D) for keys and
  the same for values; a free mask says which blocks nobody uses;
- each sequence owns a **block table**, the list of its blocks in order: token position p
  lives in slot `table[p // page_size] * page_size + p % page_size`;
- a sequence takes a new block only when its last one is full, and returns all of them when it
  finishes, so memory follows the tokens actually written (waste: under one block a sequence).

Attention reads a sequence's keys through its table. `gather` is the readable way (walk the
table, concatenate the blocks into a copy); `gather_batch` does it for a whole batch in one
fancy index. Both copy every cached key of every sequence at every step, which at 16 sequences
of a few hundred tokens costs more than the model's weights. So the allocator tries to give a
sequence **consecutive** blocks: the block after its last one when free; otherwise (and for a
new sequence) the lowest free gap that fits, after leaving room for the sequence ending just
before the gap to grow to its announced length (`add(seq, max_tokens)`; half the gap when
unknown). Sequences then sit packed from the start of the pool, each in one piece, and
`runs(seq)` lists the pieces of consecutive slots a sequence occupies: usually one, read in
place as a view, no copy (`numpylm.serving.paged_attention`). (Packed from the start also
keeps the pages of the pool that the operating system has to back few.) Blocks stay the unit
of allocation: the room left for a neighbour is only preferred, never held, and
a fragmented pool still works: it only makes more runs.

**Prefix sharing** (`share_prefixes=True`): requests often begin alike (one system prompt, a
chat resent with its history each turn). A full block's keys and values depend only on the
tokens up to its end, so a block is named by those tokens (a chain of hashes, block by block,
`record`), and a new sequence whose prompt begins with the same tokens takes the same blocks
(`share`) instead of computing them again; each block counts its owners and returns to the
pool when the last one leaves. A freed block keeps its name until it is handed out again, so
the next turn of a chat still finds it. Only full blocks are shared, and a sequence writes only
after its last token, so a shared block is never written again: the copy of copy-on-write is
never needed (`claim` checks it). `prefix_hits` counts the blocks reused.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["PagedKVCache"]


class PagedKVCache:
    """Keys and values of many sequences in one pool of `num_blocks` blocks of `page_size`
    token slots, for `n_layer` layers of `n_kv_heads` heads of size `head_size`.

    Sequences are named by any hashable id: `add(seq)`, `reserve(seq, n)` room for n more
    tokens (False when the pool is out of blocks), `write(seq, k, v)` the new tokens' keys
    and values (or `claim(seq, n)` their slots, to write layer by layer), `gather(seq)` or
    `gather_batch(seqs, width)` to read a copy, `runs(seq)` to read in place, `free(seq)` at
    the end; with `share_prefixes`, `record(seq, tokens)` and `share(seq, tokens)`.
    """

    def __init__(self, n_layer: int, n_kv_heads: int, head_size: int, num_blocks: int,
                 page_size: int = 16, dtype: Any = np.float32,
                 share_prefixes: bool = False) -> None:
        for name, value in (("n_layer", n_layer), ("n_kv_heads", n_kv_heads),
                            ("head_size", head_size), ("num_blocks", num_blocks),
                            ("page_size", page_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"PagedKVCache: {name} must be a positive integer, got {value!r}")
        shape = (n_layer, n_kv_heads, num_blocks * page_size, head_size)
        self.k = np.zeros(shape, dtype=dtype)
        self.v = np.zeros(shape, dtype=dtype)
        self.page_size, self.num_blocks = int(page_size), int(num_blocks)
        self._is_free = np.ones(num_blocks, dtype=bool)
        self._num_free = int(num_blocks)
        self._tails: dict[int, Hashable] = {}  # each sequence's last block (it grows past it)
        self._max_blocks: dict[Hashable, int] = {}  # the blocks a sequence may grow to
        self.peak_used = 0  # the most blocks in use at once (`reset_peak` starts again)
        self.tables: dict[Hashable, list[int]] = {}
        self.lengths: dict[Hashable, int] = {}
        self.refs = np.zeros(num_blocks, dtype=np.int64)  # owners of each block
        self.share_prefixes = bool(share_prefixes)
        self.prefix_hits = 0  # blocks a sequence took from another instead of computing
        self._named: dict[int, int] = {}  # the name (hash of its tokens) of a full block -> block
        self._name_of: dict[int, int] = {}  # block -> its name
        self._names: dict[Hashable, list[int]] = {}  # the names of each sequence's full blocks

    # ---- bookkeeping ----

    @property
    def num_free(self) -> int:
        """Blocks nobody uses."""
        return self._num_free

    @property
    def bytes(self) -> int:
        """Memory of the pool (keys and values)."""
        return self.k.nbytes + self.v.nbytes

    def reset_peak(self) -> None:
        """Start counting `peak_used` again from the blocks in use now."""
        self.peak_used = self.num_blocks - self._num_free

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens: ceil(tokens / page_size)."""
        return -(-tokens // self.page_size)

    def add(self, seq: Hashable, max_tokens: int | None = None) -> None:
        """Start an empty sequence (no blocks yet) that may grow to `max_tokens` tokens (a
        hint for placing it; None: unknown)."""
        if seq in self.tables:
            raise ValueError(f"PagedKVCache: sequence {seq!r} is already in the cache")
        self.tables[seq], self.lengths[seq] = [], 0
        if max_tokens is not None:
            self._max_blocks[seq] = self.blocks_for(max_tokens)

    def __contains__(self, seq: Hashable) -> bool:
        return seq in self.tables

    def _check(self, seq: Hashable) -> None:
        if seq not in self.tables:
            raise ValueError(f"PagedKVCache: no sequence {seq!r} in the cache")

    def _gap_start(self, need: int) -> int:
        """Where a sequence goes on when the block after its last one is taken (or it has
        none yet): the lowest run of free blocks with room for `need` blocks after the room
        its left neighbour (a sequence ending just before the run) may still grow into; if
        none has (or the neighbours' lengths are unknown), the largest run, with half of it
        left to the neighbour."""
        free = np.concatenate([[False], self._is_free, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(free))  # run starts and stops, alternating
        starts, stops = edges[0::2], edges[1::2]
        for start, stop in zip(starts.tolist(), stops.tolist()):
            owner = self._tails.get(start - 1, self)  # self: no neighbour
            if owner is not self and owner not in self._max_blocks:
                continue  # a neighbour of unknown length: only the largest run will do
            room = 0 if owner is self else max(self._max_blocks[owner]
                                                - len(self.tables[owner]), 0)
            if start + room + need <= stop:
                return start + room
        longest = int(np.argmax(stops - starts))
        start, size = int(starts[longest]), int(stops[longest] - starts[longest])
        if start - 1 in self._tails:
            start += min(size // 2, max(size - need, 0))
        return start

    def reserve(self, seq: Hashable, n: int) -> bool:
        """Make room for `n` more tokens of `seq`, taking free blocks (the one after its last
        block whenever it is free, so that its slots stay one run); False (and nothing
        taken) when there are not enough free blocks."""
        self._check(seq)
        table = self.tables[seq]
        need = self.blocks_for(self.lengths[seq] + n) - len(table)
        if need > self._num_free:
            return False
        for i in range(max(need, 0)):
            after = table[-1] + 1 if table else -1
            if not (0 <= after < self.num_blocks and self._is_free[after]):
                after = self._gap_start(need - i)
            if table and self._tails.get(table[-1]) == seq:
                del self._tails[table[-1]]
            table.append(after)
            self._tails[after] = seq
            self._take(after)
        self.peak_used = max(self.peak_used, self.num_blocks - self._num_free)
        return True

    def _take(self, block: int) -> None:
        """Hand a free block to a sequence; what it held is about to be overwritten."""
        name = self._name_of.pop(block, None)
        if name is not None:
            del self._named[name]
        self._is_free[block] = False
        self._num_free -= 1
        self.refs[block] = 1

    def free(self, seq: Hashable) -> None:
        """Forget `seq`; each of its blocks returns to the pool when no one else owns it."""
        self._check(seq)
        table = self.tables.pop(seq)
        self._max_blocks.pop(seq, None)
        if table:
            if self._tails.get(table[-1]) == seq:
                del self._tails[table[-1]]
            self.refs[table] -= 1
            done = [b for b in table if self.refs[b] == 0]
            self._is_free[done] = True
            self._num_free += len(done)
        del self.lengths[seq]
        self._names.pop(seq, None)

    # ---- prefix sharing ----

    def _name(self, previous: int, tokens: Sequence[int]) -> int:
        return hash((previous, tuple(tokens)))

    def record(self, seq: Hashable, tokens: Sequence[int]) -> None:
        """Name `seq`'s newly full blocks by `tokens` (its token ids, at least as many as it
        has stored), so that later sequences with the same prefix can `share` them."""
        if not self.share_prefixes:
            return
        self._check(seq)
        P, names, table = self.page_size, self._names.setdefault(seq, []), self.tables[seq]
        for i in range(len(names), self.lengths[seq] // P):
            name = self._name(names[-1] if names else 0, tokens[i * P:(i + 1) * P])
            names.append(name)
            if name not in self._named:  # the first holder of these tokens names the block
                self._named[name], self._name_of[table[i]] = table[i], name

    def share(self, seq: Hashable, tokens: Sequence[int]) -> int:
        """Give a new, empty `seq` the named blocks that hold a prefix of `tokens`, leaving at
        least one token to compute (its logits are needed); the tokens now stored."""
        self._check(seq)
        if not self.share_prefixes or self.tables[seq]:
            return 0
        P, table, names = self.page_size, self.tables[seq], self._names.setdefault(seq, [])
        for i in range((len(tokens) - 1) // P):
            name = self._name(names[-1] if names else 0, tokens[i * P:(i + 1) * P])
            block = self._named.get(name)
            if block is None:
                break
            if self._is_free[block]:  # freed but not yet reused: still holds these tokens
                self._is_free[block] = False
                self._num_free -= 1
            self.refs[block] += 1
            table.append(block)
            names.append(name)
            self.prefix_hits += 1
        self.lengths[seq] = len(table) * P
        self.peak_used = max(self.peak_used, self.num_blocks - self._num_free)
        return self.lengths[seq]

    def slots(self, seq: Hashable, start: int, stop: int) -> np.ndarray:
        """Pool slot numbers of positions start..stop-1 of `seq`, through its block table."""
        positions = np.arange(start, stop)
        table = np.asarray(self.tables[seq], dtype=np.int64)
        return table[positions // self.page_size] * self.page_size + positions % self.page_size

    def runs(self, seq: Hashable) -> list[tuple[int, int, int]]:
        """The runs of consecutive pool slots holding `seq`'s tokens, in order, as (first
        position, first slot, tokens): consecutive blocks of its table make one run."""
        self._check(seq)
        P, L, table = self.page_size, self.lengths[seq], self.tables[seq]
        out, position, i, used = [], 0, 0, self.blocks_for(L)
        while i < used:
            j = i
            while j + 1 < used and table[j + 1] == table[j] + 1:
                j += 1
            count = min((j - i + 1) * P, L - position)
            out.append((position, table[i] * P, count))
            position, i = position + count, j + 1
        return out

    def claim(self, seq: Hashable, n: int) -> np.ndarray:
        """Count `n` more tokens of `seq` as stored and return their slot numbers (room must
        have been `reserve`d): the caller writes their keys and values there, layer by layer,
        as `numpylm.serving.forward` does."""
        self._check(seq)
        L = self.lengths[seq]
        if self.blocks_for(L + n) > len(self.tables[seq]):
            raise ValueError(f"PagedKVCache.claim: sequence {seq!r} has room for "
                             f"{len(self.tables[seq]) * self.page_size - L} more tokens, got "
                             f"{n}; reserve them first")
        written = self.tables[seq][L // self.page_size:self.blocks_for(L + n)]
        if written and self.refs[written].max() > 1:  # never happens: shared blocks are full
            raise ValueError(f"PagedKVCache.claim: sequence {seq!r} would write a shared block")
        self.lengths[seq] = L + n
        return self.slots(seq, L, L + n)

    # ---- writing and reading ----

    def write(self, seq: Hashable, k: np.ndarray, v: np.ndarray) -> None:
        """Store keys and values (n_layer, Hkv, n, D) of `seq`'s next n tokens (room for them
        must have been `reserve`d)."""
        self._check(seq)
        n, L = k.shape[2], self.lengths[seq]
        if k.shape != v.shape or k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
            raise ValueError(f"PagedKVCache.write: keys {k.shape} and values {v.shape} must "
                             f"both be (n_layer, Hkv, n, D) = ({self.k.shape[0]}, "
                             f"{self.k.shape[1]}, n, {self.k.shape[3]})")
        if self.blocks_for(L + n) > len(self.tables[seq]):
            raise ValueError(f"PagedKVCache.write: sequence {seq!r} has room for "
                             f"{len(self.tables[seq]) * self.page_size - L} more tokens, got "
                             f"{n}; reserve them first")
        slots = self.slots(seq, L, L + n)
        self.k[:, :, slots] = k
        self.v[:, :, slots] = v
        self.lengths[seq] = L + n

    def gather(self, seq: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values (n_layer, Hkv, L, D) of every token of `seq`, the readable way:
        each block of its table in turn, the last one cut at the sequence's length."""
        self._check(seq)
        P, L = self.page_size, self.lengths[seq]
        ks, vs = [], []
        for i, block in enumerate(self.tables[seq]):
            used = min(P, L - i * P)  # every block is full but maybe the last
            if used <= 0:
                break
            ks.append(self.k[:, :, block * P:block * P + used])
            vs.append(self.v[:, :, block * P:block * P + used])
        if not ks:
            empty = self.k[:, :, :0]
            return empty.copy(), empty.copy()
        return np.concatenate(ks, axis=2), np.concatenate(vs, axis=2)

    def gather_batch(self, seqs: Sequence[Hashable], width: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys and values (n_layer, B, Hkv, width, D) of several sequences, each right-aligned
        (its last token in the last column) and left-padded, and the mask (B, width) of real
        columns: the left padding of `numpylm.models.decoding`, read in one fancy index.

        Padding columns read slot 0 (whatever is there) and are hidden by the mask.
        """
        B = len(seqs)
        index = np.zeros((B, width), dtype=np.int64)
        real = np.zeros((B, width), dtype=bool)
        for b, seq in enumerate(seqs):
            L = self.lengths[seq]
            if L > width:
                raise ValueError(f"PagedKVCache.gather_batch: sequence {seq!r} has {L} tokens, "
                                 f"more than the width {width}")
            if L:
                index[b, width - L:] = self.slots(seq, 0, L)
                real[b, width - L:] = True
        # (n_layer, Hkv, B, width, D) -> (n_layer, B, Hkv, width, D)
        k = self.k[:, :, index].transpose(0, 2, 1, 3, 4)
        v = self.v[:, :, index].transpose(0, 2, 1, 3, 4)
        return k, v, real
