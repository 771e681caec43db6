"""Learning byte-pair merges: the plain trainer to read first, and a fast twin proven equal.

Byte-pair encoding (Sennrich et al., 2016, after Gage, 1994) starts from the 256 byte values
and repeatedly replaces the most frequent adjacent pair of ids with a new id. The list of
merges, in the order they were learned, *is* the tokenizer: encoding replays them.

Both trainers take the pre-tokenised chunks of a text (pairs never cross a chunk boundary)
and return the merges as `(left, right)` pairs; merge `k` creates id `256 + k`.

Tie-break. When several pairs are equally frequent, both trainers pick the pair `(left, right)`
that is smallest as a tuple of ids: smallest left id first, then smallest right id. So on
"abab" (pairs ab:2, ba:1) the first merge is (97, 98), the most frequent; on "dcba" (dc, cb,
ba, once each) it is (98, 97) = "ba", the smallest pair of ids, not the first one seen. A rule
that depends only on ids, never on the order in which pairs were counted, is what lets two
very different algorithms agree merge for merge.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    Subtle: occurrences may overlap when both halves are equal; the scan takes the leftmost,
    so [a, a, a] with pair (a, a) becomes [aa, a], never [a, aa].

    >>> merge_pair([1, 2, 1, 2, 3], (1, 2), 9)
    [9, 9, 3]
    >>> merge_pair([5, 5, 5], (5, 5), 9)
    [9, 5]
    """
    left, right = pair
    out = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == left and i + 1 < n and ids[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_counting(
    word: list[int],
    pair: tuple[int, int],
    new_id: int,
    weight: int,
    delta: defaultdict[tuple[int, int], int],
) -> list[int]:
    """`merge_pair`, also recording in `delta` how the counts of neighbouring pairs change.

    For each occurrence x [a b] y: the pairs (x, a) and (b, y) disappear, (x, new) and
    (new, y) appear, each `weight` times (the pair (a, b) itself is dropped by the caller).
    Subtle: x is read from the output, not the input, so when two occurrences touch
    ("a b a b") the second one takes back the (new, a) that the first one counted and counts
    (new, new) instead, exactly the pairs of the merged word.
    """
    left, right = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if word[i] == left and i + 1 < n and word[i + 1] == right:
            if out:
                delta[(out[-1], left)] -= weight
                delta[(out[-1], new_id)] += weight
            if i + 2 < n:
                delta[(right, word[i + 2])] -= weight
                delta[(new_id, word[i + 2])] += weight
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _best_pair(counts: Counter[tuple[int, int]]) -> tuple[int, int]:
    # Most frequent first; among ties, the smallest (left, right). See the module docstring.
    return min(counts, key=lambda pair: (-counts[pair], pair))


def train_merges_plain(chunks: Iterable[str], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges by recounting every pair after every merge.

    This is the algorithm as one would first write it: each step counts all adjacent pairs in
    all chunks, merges the best one everywhere, and starts again. Each step costs a pass over
    the whole text, so it is slow; `train_merges_fast` gives the same merges much sooner.
    Training stops early when every chunk has become a single token.
    """
    words = [list(chunk.encode("utf-8")) for chunk in chunks]
    merges: list[tuple[int, int]] = []
    for step in range(num_merges):
        counts: Counter[tuple[int, int]] = Counter()
        for word in words:
            counts.update(zip(word, word[1:]))
        if not counts:
            break
        pair = _best_pair(counts)
        new_id = 256 + step
        words = [merge_pair(word, pair, new_id) for word in words]
        merges.append(pair)
    return merges


def train_merges_fast(chunks: Iterable[str], num_merges: int) -> list[tuple[int, int]]:
    """Learn the same merges as `train_merges_plain`, incrementally.

    Three ideas make it fast, none changes the result:
    1. Identical chunks behave identically, so each distinct chunk is kept once, weighted by
       how often it occurs (" the" appears thousands of times and is merged once).
    2. A merge only changes the counts of pairs next to where it happened. An index from
       each pair to the chunks holding it finds those chunks, and only the pairs beside each
       occurrence are updated.
    3. The best pair comes from a heap of (-count, left, right) entries, whose order is exactly
       the tie-break rule. When a count changes the new entry is pushed and the old one left
       behind; an entry whose count no longer matches the current one is stale and skipped
       when it reaches the top ("lazy deletion").
    """
    words: list[list[int]] = []
    weights: list[int] = []
    for chunk, count in Counter(chunks).items():
        word = list(chunk.encode("utf-8"))
        if len(word) > 1:  # a one-byte chunk has no pair and can never change
            words.append(word)
            weights.append(count)

    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for index, (word, weight) in enumerate(zip(words, weights)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += weight
            where[pair].add(index)
    heap = [(-count, left, right) for (left, right), count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges:
        while heap:
            negative_count, left, right = heapq.heappop(heap)
            if pair_counts.get((left, right)) == -negative_count:
                break  # a current entry, not a stale one
        else:
            break  # no pairs left: every chunk is a single token
        pair = (left, right)
        new_id = 256 + len(merges)
        merges.append(pair)

        # Only pairs touching an occurrence of the merged pair change; `delta` collects them.
        delta: defaultdict[tuple[int, int], int] = defaultdict(int)
        for index in where.pop(pair):
            word = words[index]
            merged = _merge_counting(word, pair, new_id, weights[index], delta)
            if len(merged) == len(word):
                continue  # a stale index entry: an earlier merge removed the pair here
            for i, token in enumerate(merged):
                if token == new_id:  # the new pairs are the ones holding the new id
                    if i > 0:
                        where[(merged[i - 1], new_id)].add(index)
                    if i + 1 < len(merged):
                        where[(new_id, merged[i + 1])].add(index)
            words[index] = merged

        del pair_counts[pair]  # every occurrence was merged
        delta.pop(pair, None)
        for changed, difference in delta.items():
            if difference:
                count = pair_counts[changed] + difference
                if count:
                    pair_counts[changed] = count
                    heapq.heappush(heap, (-count, *changed))
                else:
                    del pair_counts[changed]
    return merges
