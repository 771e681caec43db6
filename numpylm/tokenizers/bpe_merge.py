"""BPE encoding of one chunk: merge the adjacent pair with the lowest rank until none is left.

The rule is the whole of BPE encoding, and `merge_plain` says it in a few lines: scan the
chunk for the lowest-ranked pair (the leftmost one on a tie), merge it, scan again. Each scan
costs the chunk's length, so a chunk of n symbols costs O(n^2). A real text can hold a chunk of
thousands of symbols (a long run of one character, a minified file), so `merge_heap` keeps the
candidate pairs in a heap ordered by (rank, position) and the symbols in a linked list: a merge
changes two neighbouring pairs, which are pushed; pairs that a merge destroyed stay in the heap
and are recognised as stale when they surface (lazy invalidation). Every pair enters the heap
at most once per merge, so the chunk costs O(n log n). A property test proves the two equal.

`merges[(left, right)] = (rank, new_id)`: the two ids of a pair, the merge's rank and the id
it makes. Unlike `apply_merges` below, the id comes with the pair, as in `tokenizer.json` and
GGUF vocabularies, where two different pairs may spell the same token.

The byte-level BPE of `bpe.py` (tiktoken's ranks: merge k makes id `merged_id[k]`) merges with
the functions after those: `replay_merges`, the definition (every merge in rank order);
`apply_merges`, a loop over the pairs present, for short chunks; and `merge_long`, which merges
a whole rank at a time with NumPy (a heap of pending ranks with lazy invalidation), O(n log n)
for a 10 MB line without spaces where the loop would take hours. The tests prove all of them
equal.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from numpylm.tokenizers.bpe_train import merge_pair

Merges = Mapping[tuple[int, int], tuple[int, int]]

MAX_ID = 1 << 24  # 16.7M: above any real vocabulary, below what an embedding can hold
_NO_RANK = 1 << 62  # larger than any rank: "this pair is not a merge"
_SLOT_BITS = 39  # merge_long packs (rank, slot) in one int64: slots below 2^39, ranks 2^24
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_DENSE = 256  # MergeTable.rank_of looks pairs of ids below this up in one 256 x 256 table


def merge_plain(ids: Sequence[int], merges: Merges) -> list[int]:
    """The readable twin: find the lowest-ranked adjacent pair (leftmost on ties), merge, repeat."""
    ids = list(ids)
    while True:
        best: tuple[int, int, int] | None = None  # (rank, position, new id)
        for i in range(len(ids) - 1):
            found = merges.get((ids[i], ids[i + 1]))
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], i, found[1])
        if best is None:
            return ids
        _, i, new = best
        ids[i:i + 2] = [new]


def merge_heap(ids: Sequence[int], merges: Merges) -> list[int]:
    """`merge_plain` in O(n log n): a heap of candidate pairs over a linked list of symbols."""
    n = len(ids)
    if n < 2:
        return list(ids)
    symbol: list[int | None] = list(ids)  # None once merged into its left neighbour
    following = [*range(1, n), -1]
    preceding = list(range(-1, n - 1))
    get = merges.get
    # A heap entry (rank, i, left, right) claims "the pair at position i is (left, right)".
    heap = []
    for i in range(n - 1):
        found = get((ids[i], ids[i + 1]))
        if found is not None:
            heap.append((found[0], i, ids[i], ids[i + 1]))
    heapq.heapify(heap)
    while heap:
        _, i, left, right = heapq.heappop(heap)
        j = following[i]
        # Stale if position i was merged away or changed, or its right neighbour changed.
        if symbol[i] != left or j < 0 or symbol[j] != right:
            continue
        symbol[i] = new = merges[(left, right)][1]
        symbol[j] = None
        k = following[j]
        following[i] = k
        if k >= 0:
            preceding[k] = i
            found = get((new, symbol[k]))
            if found is not None:
                heapq.heappush(heap, (found[0], i, new, symbol[k]))
        p = preceding[i]
        if p >= 0:
            found = get((symbol[p], new))
            if found is not None:
                heapq.heappush(heap, (found[0], p, symbol[p], new))
    return [s for s in symbol if s is not None]


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
