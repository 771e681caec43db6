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
it makes. Unlike `bpe.apply_merges`, the id comes with the pair, as in `tokenizer.json` and GGUF
vocabularies, where two different pairs may spell the same token.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

Merges = Mapping[tuple[int, int], tuple[int, int]]


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
