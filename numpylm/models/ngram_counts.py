"""Counting n-grams: the only statistics a count-based language model is made of.

An n-gram model predicts token t from the n-1 tokens before it, so everything it knows is
how often each (context, token) pair occurred. This module turns token sequences into those
counts twice over: `count_ngrams_loop` is the readable version (a dictionary per order,
filled one position at a time), and `count_ngrams` is the vectorised version (every n-gram
packed into one int64 and counted with `np.unique`). A property test shows they agree.

Conventions shared by both twins:
- A sequence is padded with n-1 BOS ids in front and one EOS id behind, so every real token
  and the final EOS is predicted from a full-length context (BOS is only ever context).
- There is one n-gram per predicted position; the m-gram of a position (m < n) is the suffix
  of its n-gram. Lower-order counts are therefore sums of higher-order counts, and
  sum_w c(h, w) = c(h) at every order.
- Continuation counts (Kneser & Ney 1995) count *distinct left neighbours*:
  N1+(. h w) = |{u : c(u h w) > 0}|, read off the set of distinct (m+1)-grams.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

INT64_LIMIT = 2**63 - 1


def check_sequences(
    sequences: Iterable[Sequence[int] | np.ndarray], vocab_size: int, bos_id: int
) -> list[np.ndarray]:
    """Validate an iterable of token-id sequences and return them as int64 arrays.

    Raises TypeError for anything that is not a sequence of integers, and ValueError for an
    id outside [0, vocab_size) or for the BOS id inside a sequence (BOS is padding, not data).
    """
    if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Iterable):
        raise TypeError(f"expected an iterable of token-id sequences, got {type(sequences).__name__}")
    out = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, (int, np.integer)):
            raise TypeError(
                f"expected an iterable of token-id sequences, but item {i} is the int {seq}; "
                "wrap a single sequence in a list"
            )
        arr = np.asarray(seq)
        if arr.size == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(
                f"sequence {i} must be a 1-D sequence of integer ids, got dtype {arr.dtype} "
                f"and shape {arr.shape}"
            )
        arr = arr.astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"sequence {i} has token id {int(arr[j])} at position {j}, outside the "
                f"vocabulary [0, {vocab_size})"
            )
        at_bos = np.flatnonzero(arr == bos_id)
        if at_bos.size:
            raise ValueError(
                f"sequence {i} contains the BOS id {bos_id} at position {int(at_bos[0])}; "
                "BOS is padding added by the model, not data"
            )
        out.append(arr)
    return out


def padded_windows(sequences: list[np.ndarray], order: int, bos_id: int, eos_id: int) -> np.ndarray:
    """One row per predicted position: the n-1 context ids followed by the predicted id.

    Shape (N, order), N = sum(len(s) + 1) (every token and one EOS per sequence).
    Example, order 3, BOS=EOS=0: [5, 6] -> rows [0 0 5], [0 5 6], [5 6 0].
    """
    pad = np.full(order - 1, bos_id, dtype=np.int64)
    end = np.array([eos_id], dtype=np.int64)
    if not sequences:
        return np.zeros((0, order), dtype=np.int64)
    stream = np.concatenate([part for s in sequences for part in (pad, s, end)])
    padded_lengths = np.array([len(s) + order for s in sequences])
    starts = np.cumsum(padded_lengths) - padded_lengths  # where each padded sequence begins
    # A window of `order` ids starting at offset j = 0 .. len(s) of a padded sequence predicts
    # its last id; no window reaches into the next sequence.
    n_windows = padded_lengths - order + 1
    first_window = np.cumsum(n_windows) - n_windows
    offsets = np.arange(n_windows.sum()) - np.repeat(first_window, n_windows)
    window_starts = np.repeat(starts, n_windows) + offsets
    windows = np.lib.stride_tricks.sliding_window_view(stream, order)
    return windows[window_starts]


def check_packable(vocab_size: int, order: int) -> None:
    """Every m-gram (m <= order) is one base-V number; it must fit in an int64.

    V**order as an exact integer has order * log2(V) bits, so an absurd order (a file saying
    10**9) would take forever to compute: the logarithm is compared first.
    """
    if vocab_size > 1 and order * math.log2(vocab_size) > 64:
        raise ValueError(
            f"vocab_size**order = {vocab_size}**{order} does not fit in an int64 key; "
            "use a lower order or a smaller vocabulary"
        )
    if vocab_size**order > INT64_LIMIT:
        raise ValueError(
            f"vocab_size**order = {vocab_size}**{order} does not fit in an int64 key; "
            "use a lower order or a smaller vocabulary"
        )


def pack(grams: np.ndarray, vocab_size: int) -> np.ndarray:
    """Read each row (t_1 .. t_m) as the base-V number sum_i t_i V^(m-i), as int64.

    The first id is the most significant digit, so keys sorted numerically are grouped by
    context (key // V) and the suffix of length j is key % V^j.
    """
    grams = np.asarray(grams, dtype=np.int64)
    keys = np.zeros(grams.shape[0], dtype=np.int64)
    for col in range(grams.shape[1]):
        keys = keys * vocab_size + grams[:, col]
    return keys


def unpack(keys: np.ndarray, m: int, vocab_size: int) -> np.ndarray:
    """Inverse of `pack`: (N,) keys -> (N, m) ids."""
    keys = np.asarray(keys, dtype=np.int64).copy()
    out = np.zeros((keys.shape[0], m), dtype=np.int64)
    for col in range(m - 1, -1, -1):
        out[:, col] = keys % vocab_size
        keys //= vocab_size
    return out


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary search: (index, found) for each query in a sorted unique key array."""
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, max(len(sorted_keys) - 1, 0))
    found = sorted_keys[idx] == queries if len(sorted_keys) else np.zeros(len(queries), bool)
    return idx, found


# ----------------------------------------------------------------------------------------------
# The readable twin.


def count_ngrams_loop(
    sequences: list[np.ndarray], order: int, bos_id: int, eos_id: int
) -> tuple[list[Counter], list[Counter]]:
    """Raw and continuation counts, one Counter of id tuples per order (index 0 is order 1).

    raw[m-1][(h..., w)]  = number of positions whose last m ids are (h..., w)
    cont[m-1][(h..., w)] = number of distinct u with raw[m][(u, h..., w)] > 0   (m < order)
    cont[order-1] is empty: the highest order has no higher order to take continuations from.
    """
    raw = [Counter() for _ in range(order)]
    for seq in sequences:
        padded = [bos_id] * (order - 1) + [int(t) for t in seq] + [eos_id]
        for t in range(order - 1, len(padded)):  # every predicted position
            for m in range(1, order + 1):
                raw[m - 1][tuple(padded[t - m + 1 : t + 1])] += 1
    cont = [Counter() for _ in range(order)]
    for m in range(1, order):
        for gram in raw[m]:  # each distinct (m+1)-gram adds one left neighbour to its suffix
            cont[m - 1][gram[1:]] += 1
    return raw, cont


# ----------------------------------------------------------------------------------------------
# The vectorised twin.


@dataclass
class OrderTable:
    """The counts of one order m, sorted by packed key, with per-context summaries.

    keys, counts: the distinct m-grams (packed) and the count used at this order.
    ctx_keys: the distinct contexts (packed m-1 ids; always 0 for m = 1).
    gram_ctx: for each m-gram, the index of its context in ctx_keys.
    ctx_total: sum of counts over the context's followers (c(h), or N1+(. h .)).
    ctx_types, ctx_n1, ctx_n2: how many followers have count >= 1, == 1, == 2.
    """

    order: int
    keys: np.ndarray
    counts: np.ndarray
    ctx_keys: np.ndarray
    gram_ctx: np.ndarray
    ctx_total: np.ndarray
    ctx_types: np.ndarray
    ctx_n1: np.ndarray
    ctx_n2: np.ndarray

    @classmethod
    def build(cls, order: int, keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> "OrderTable":
        """keys must be sorted and unique, counts all >= 1."""
        ctx_of_gram = keys // vocab_size
        ctx_keys, gram_ctx = np.unique(ctx_of_gram, return_inverse=True)
        n_ctx = len(ctx_keys)

        def per_context(values: np.ndarray) -> np.ndarray:
            return np.bincount(gram_ctx, weights=values, minlength=n_ctx).astype(np.int64)

        return cls(
            order=order,
            keys=keys,
            counts=counts,
            ctx_keys=ctx_keys,
            gram_ctx=gram_ctx.astype(np.int64),
            ctx_total=per_context(counts),
            ctx_types=np.bincount(gram_ctx, minlength=n_ctx).astype(np.int64),
            ctx_n1=per_context((counts == 1).astype(np.int64)),
            ctx_n2=per_context((counts == 2).astype(np.int64)),
        )

    def count_of_counts(self, c: int) -> int:
        """n_c: how many distinct m-grams have count exactly c."""
        return int(np.count_nonzero(self.counts == c))

    def as_dict(self, vocab_size: int) -> dict[tuple[int, ...], int]:
        grams = unpack(self.keys, self.order, vocab_size)
        return {tuple(int(t) for t in g): int(c) for g, c in zip(grams, self.counts)}


def count_ngrams(
    windows: np.ndarray, vocab_size: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Raw and continuation counts per order from `padded_windows` rows, vectorised.

    Returns (raw, cont), lists indexed by order-1 of (sorted unique keys, counts);
    cont[order-1] is empty, as in `count_ngrams_loop`.
    """
    order = windows.shape[1]
    top_keys, top_counts = np.unique(pack(windows, vocab_size), return_counts=True)
    raw: list[tuple[np.ndarray, np.ndarray]] = [None] * order  # type: ignore[list-item]
    raw[order - 1] = (top_keys, top_counts.astype(np.int64))
    cont: list[tuple[np.ndarray, np.ndarray]] = [None] * order  # type: ignore[list-item]
    cont[order - 1] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    for m in range(order - 1, 0, -1):
        higher_keys, higher_counts = raw[m]
        # The m-gram of a position is the suffix of its (m+1)-gram: key % V^m.
        suffix = higher_keys % vocab_size**m
        keys, inverse = np.unique(suffix, return_inverse=True)
        raw[m - 1] = (keys, np.bincount(inverse, weights=higher_counts).astype(np.int64))
        # Each distinct (m+1)-gram is one distinct left neighbour of its suffix.
        cont[m - 1] = (keys, np.bincount(inverse).astype(np.int64))
    return raw, cont


# ----------------------------------------------------------------------------------------------
# Checking tables read from a file.


def check_count_tables(state: dict[str, np.ndarray], order: int, vocab_size: int,
                       continuation: bool, where: str | None = None) -> None:
    """Refuse count tables that `count_ngrams` could not have produced for this model.

    The packed keys mean something only in base `vocab_size` (`pack`), so a file whose
    `vocab_size` was edited would silently score other n-grams. Every table below the top
    is a function of the one above it (its keys are the suffixes `key % V^m`, its counts
    the sums of the counts above, or with Kneser-Ney the number of distinct (m+1)-grams),
    so recomputing them checks types, ranges and the base at once, in O(N log N).
    Raises `FileFormatError` naming the array.
    """
    from numpylm.io.errors import FileFormatError

    def bad(name: str, message: str) -> FileFormatError:
        return FileFormatError(where, message, field=name)

    tables = []
    for m in range(1, order + 1):
        keys, counts = state[f"order{m}.keys"], state[f"order{m}.counts"]
        for name, array in ((f"order{m}.keys", keys), (f"order{m}.counts", counts)):
            if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
                shown = getattr(array, "dtype", type(array).__name__)
                raise bad(name, f"must be a 1-D integer array, got {shown} "
                                f"{getattr(array, 'shape', '')}")
        if len(keys) != len(counts):
            raise bad(f"order{m}.counts", f"has {len(counts)} entries for {len(keys)} keys")
        keys, counts = keys.astype(np.int64), counts.astype(np.int64)
        if len(keys) and (keys[0] < 0 or keys[-1] >= vocab_size**m):
            raise bad(f"order{m}.keys", f"holds keys outside [0, {vocab_size}**{m}); the "
                                        f"file's vocab_size or order is not the one counted with")
        if np.any(np.diff(keys) <= 0):
            raise bad(f"order{m}.keys", "must be sorted and distinct")
        if len(counts) and counts.min() < 1:
            raise bad(f"order{m}.counts", "holds a count below 1")
        tables.append((keys, counts))
    for m in range(order - 1, 0, -1):
        higher_keys, higher_counts = tables[m]
        keys, inverse = np.unique(higher_keys % vocab_size**m, return_inverse=True)
        lower_keys, lower_counts = tables[m - 1]
        if not np.array_equal(keys, lower_keys):
            raise bad(f"order{m}.keys", f"are not the suffixes of order{m + 1}.keys in base "
                                        f"{vocab_size}; the file's vocab_size or order is not "
                                        f"the one counted with")
        if continuation:
            expected = np.bincount(inverse, minlength=len(keys))
        else:
            expected = np.bincount(inverse, weights=higher_counts, minlength=len(keys))
        if not np.array_equal(expected.astype(np.int64), lower_counts):
            raise bad(f"order{m}.counts", f"do not follow from order{m + 1}'s counts")
    n_tokens = state["n_tokens"]
    top_total = int(tables[-1][1].sum()) if order else 0
    if (not isinstance(n_tokens, np.ndarray) or n_tokens.shape != () or n_tokens.dtype.kind not in "iu"
            or int(n_tokens) != top_total):
        raise bad("n_tokens", f"must be the integer {top_total} (the sum of order{order}.counts), "
                              f"got {n_tokens!r}"[:200])
