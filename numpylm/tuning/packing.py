"""Sequence packing, part 4 of the guide: several short conversations share one row of a batch,
and none of them can see the others.

Padding (`numpylm.tuning.sft.pad_batch`) wastes every padded position's compute; with many
short examples and a few long ones most of a batch can be padding. Packing lays examples end
to end in rows of `block_size` tokens instead. Two things keep it exact, so each example's
loss is what it would be alone (the tests check it):

1. **Attention stays inside a document.** The mask of row b is block-diagonal: query t may
   attend to key s only if both belong to the same example (and s <= t, the causal rule):
   mask[b, t, s] = doc[b, t] == doc[b, s].
2. **Positions restart at every document.** RoPE rotates q and k by their position; each
   example's tokens get positions 0, 1, 2, ... as if it started the row.

Targets never cross a boundary either: the last token of an example has its own next-token
target (or IGNORE_INDEX) from the example itself, never the next example's first token.

`packed_forward` is `Llama.forward` with these two inputs (a per-row position table and a
(B, 1, T, T) mask); it is written here, against the Llama modules, because the model's own
forward takes only a key-padding mask.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.models.base import IGNORE_INDEX
from numpylm.tuning.sft import SFTExample

__all__ = ["pack", "pack_random", "packed_positions", "packed_forward"]


def pack(examples: Sequence[SFTExample], block_size: int,
         pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, targets, doc) of shape (rows, block_size): examples in order, each placed in the
    current row if it fits, else in a new one. doc numbers the examples of a row from 1; 0
    marks the padding at a row's end (its targets are ignored)."""
    rows: list[list[SFTExample]] = [[]]
    used = 0
    for e in examples:
        if len(e.ids) > block_size:
            raise ValueError(f"pack: an example of {len(e.ids)} tokens is longer than "
                             f"block_size {block_size}; crop it (max_length) first")
        if used + len(e.ids) > block_size:
            rows.append([])
            used = 0
        rows[-1].append(e)
        used += len(e.ids)
    ids = np.full((len(rows), block_size), pad_id, dtype=np.int64)
    targets = np.full((len(rows), block_size), IGNORE_INDEX, dtype=np.int64)
    doc = np.zeros((len(rows), block_size), dtype=np.int64)
    for r, row in enumerate(rows):
        t = 0
        for d, e in enumerate(row, 1):
            n = len(e.ids)
            ids[r, t:t + n], targets[r, t:t + n], doc[r, t:t + n] = e.ids, e.targets, d
            t += n
    return ids, targets, doc


def pack_random(examples: Sequence[SFTExample], rows: int, block_size: int,
                rng: np.random.Generator, pad_id: int = 0) -> tuple[np.ndarray, ...]:
    """`pack` of examples drawn at random until exactly `rows` rows are full: the first drawn
    example that fits in no row left is put back (training batches of a fixed size)."""
    drawn: list[SFTExample] = []
    used, filled = 0, 1
    while True:
        e = examples[int(rng.integers(len(examples)))]
        if len(e.ids) > block_size:
            raise ValueError(f"pack_random: an example of {len(e.ids)} tokens is longer than "
                             f"block_size {block_size}; crop it (max_length) first")
        if used + len(e.ids) > block_size:  # pack() would open a new row for it
            if filled == rows:
                break
            filled, used = filled + 1, 0
        drawn.append(e)
        used += len(e.ids)
    return pack(drawn, block_size, pad_id)


def packed_positions(doc: np.ndarray) -> np.ndarray:
    """(B, T) positions that restart at 0 where a new document (or the padding) begins."""
    B, T = doc.shape
    t = np.broadcast_to(np.arange(T), (B, T))
    starts = np.ones((B, T), bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    start_index = np.maximum.accumulate(np.where(starts, t, 0), axis=1)
    return t - start_index


def packed_forward(model: Any, ids: np.ndarray, doc: np.ndarray,
                   targets: np.ndarray | None = None) -> tuple[Tensor, Tensor | None]:
    """A Llama's (logits, mean loss) on packed rows: attention within documents only."""
    cos, sin = model.rope_tables(packed_positions(doc))  # (B, T, D/2)
    cos, sin = cos[:, None], sin[:, None]                # the same for every head
    mask = (doc[:, :, None] == doc[:, None, :])[:, None]  # (B, 1, T, T), with causal on top
    x = model.model.embed_tokens(ids)
    for layer in model.model.layers:
        x = layer(x, cos, sin, mask)
    x = model.model.norm(x)
    if model.lm_head is None:
        logits = F.matmul(x, F.transpose(model.model.embed_tokens.weight))
    else:
        logits = model.lm_head(x)
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
