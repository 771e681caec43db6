"""Running many contexts at once, each shared prefix once: the last logits of every context,
for scoring one-token choices (part 4 of the guide; `loglikelihood.score_batched` uses it).

A benchmark's questions repeat themselves at the start: every MMLU prompt opens with "The
following are multiple choice questions (with answers) about", and the five questions of a
subject share "... abstract algebra.\\n\\n" after it. Sorted, the contexts form a prefix
tree: a node holds the tokens its rows share beyond its parent's. Each node is run once, from
its parent's keys and values, and hands its own to its children; a leaf is one context,
whose logits are the answer. (Serving systems keep the same tree across requests, "radix"
prefix caches.)

The tree is run level by level, and the nodes of a level in padded batches: sorted by how
many tokens they add, cut where a batch would pass `batch_tokens` rows of new tokens, each
batch one `step` of a fresh decoding state whose rows start from their parents' keys and
values (`numpylm.models.decoding.start_from_prefixes`, shorter ones padded on the left). A
matrix product over many rows is faster per row than over one context's few rows, and a
decoding step streams every weight once however many rows it has.

Sharing needs a state made of keys and values (`TransformerState`); any other model (a
recurrent one, an n-gram) runs its contexts as batches without the tree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from numpylm.models.decoding import TransformerState, prefix_of, start_from_prefixes

__all__ = ["last_logits"]

MIN_SHARED = 4  # fewer shared tokens than this are not worth a node of their own


@dataclass(eq=False)
class _Node:
    tokens: list[int]  # the ids this node adds to its parent's
    parent: "_Node | None"
    rows: list[int] = field(default_factory=list)  # contexts that end here (leaves)
    children: list["_Node"] = field(default_factory=list)
    prefix: Any = None  # after running: (ids, keys, values) of everything up to here


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _tree(rows: Sequence[Sequence[int]]) -> list[_Node]:
    """The first-level nodes of the prefix tree of `rows` (each with at least one id)."""
    order = sorted(range(len(rows)), key=lambda r: list(rows[r]))
    lcp = [_common(rows[order[k]], rows[order[k + 1]]) for k in range(len(order) - 1)]
    top: list[_Node] = []

    def leaf(k: int, parent: _Node | None, depth: int, out: list[_Node]) -> None:
        r = order[k]
        out.append(_Node(list(rows[r][depth:]), parent, rows=[r]))

    # Ranges of the sorted rows still to place, with the node they hang from (a stack, not
    # recursion: contexts nested a thousand deep would pass Python's recursion limit).
    stack: list[tuple[int, int, _Node | None, int, list[_Node]]] = []
    if rows:
        stack.append((0, len(rows), None, 0, top))
    while stack:
        lo, hi, parent, depth, out = stack.pop()
        if hi - lo == 1:
            leaf(lo, parent, depth, out)
            continue
        # What every row of the range shares, leaving each row at least one id of its own.
        shared = min(min(lcp[lo:hi - 1]), min(len(rows[order[k]]) for k in range(lo, hi)) - 1)
        if shared - depth >= MIN_SHARED:
            node = _Node(list(rows[order[lo]][depth:shared]), parent)
            out.append(node)
            parent, depth, out = node, shared, node.children
        cuts = [k + 1 for k in range(lo, hi - 1) if lcp[k] <= shared]
        if not cuts:  # one row a prefix of the others: nothing splits them, each ends here
            for k in range(lo, hi):
                leaf(k, parent, depth, out)
            continue
        # Pushed last first, so the ranges are placed in sorted order.
        for a, b in reversed(list(zip([lo, *cuts], [*cuts, hi]))):
            stack.append((a, b, parent, depth, out))
    return top


def _batches(nodes: list[_Node], batch_tokens: int, capacity: int | None) -> list[list[_Node]]:
    """Nodes sorted by the ids they add, cut into batches of at most `batch_tokens` padded
    new ids, of nearly equal lengths (padding is work thrown away: a batch ends where a
    node is more than 1/8, and 8 ids, longer than its first), whose parents' prefixes plus
    new ids fit the state's `capacity`."""
    def prefix_len(node: _Node) -> int:
        return 0 if node.parent is None else len(node.parent.prefix[0])

    nodes = sorted(nodes, key=lambda n: len(n.tokens))
    batches, start = [], 0
    while start < len(nodes):
        end, longest = start + 1, prefix_len(nodes[start])
        first = len(nodes[start].tokens)
        while end < len(nodes):
            width = len(nodes[end].tokens)
            longest_next = max(longest, prefix_len(nodes[end]))
            if ((end + 1 - start) * width > batch_tokens or width > first + max(8, first // 8)
                    or (capacity is not None and longest_next + width > capacity)):
                break
            longest, end = longest_next, end + 1
        batches.append(nodes[start:end])
        start = end
    return batches


def last_logits(model: Any, rows: Sequence[Sequence[int]], batch_tokens: int = 1024,
                share: bool = True) -> np.ndarray:
    """The logits (len(rows), V) after each row of ids (each at most the model's window),
    each the model's `step` over that row from an empty state; shared prefixes run once
    when `share` and the model's state is a KV cache."""
    if batch_tokens < 1:
        raise ValueError(f"last_logits: batch_tokens must be positive, got {batch_tokens}")
    if any(len(r) == 0 for r in rows):
        raise ValueError("last_logits: every row needs at least one id")
    window = getattr(model, "block_size", None)
    if window is not None and any(len(r) > window for r in rows):
        raise ValueError(f"last_logits: a row is longer than the model's window of {window} "
                         f"ids; crop it first (score_batched keeps the last {window})")
    unique = list(dict.fromkeys(tuple(r) for r in rows))  # the same context runs once
    share = share and isinstance(model.init_state(1), TransformerState)
    level = _tree(unique) if share else [_Node(list(r), None, rows=[i])
                                        for i, r in enumerate(unique)]
    out: list[np.ndarray | None] = [None] * len(unique)
    while level:
        for batch in _batches(level, batch_tokens, window):
            width = max(len(n.tokens) for n in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=bool)
            for b, node in enumerate(batch):
                ids[b, width - len(node.tokens):] = node.tokens
                mask[b, width - len(node.tokens):] = True
            state = model.init_state(len(batch))
            if share:
                start_from_prefixes(state, [n.parent and n.parent.prefix for n in batch])
            logits = np.asarray(model.step(state, ids, None if mask.all() else mask))
            for b, node in enumerate(batch):
                for r in node.rows:
                    out[r] = logits[b]
                if node.children:
                    node.prefix = prefix_of(state, b)
        for node in level:  # a parent's keys and values are no longer needed
            if node.parent is not None:
                node.parent.prefix = None
        level = [child for node in level for child in node.children]
    where = {row: i for i, row in enumerate(unique)}
    return np.stack([out[where[tuple(r)]] for r in rows])
