"""One model step for a whole batch of sequences over the paged pool, part 3 of the guide: where
batching pays, and where it does not.

Every sequence in a step feeds some new tokens: one (decoding) or a chunk of its prompt. Their
tokens are laid end to end, **ragged**, as the rows of one matrix (N, C): no padding, so a
300-token chunk and fifteen one-token rows are 315 rows, not 16 x 300. Everything that treats
tokens independently (the embedding, the norms, the q/k/v/o projections, RoPE at each token's
own position, the MLP) is then one matrix product per weight for the whole step: the weights are
read from memory once for N tokens instead of once per sequence, which is why 16 sequences cost
far less than 16 times one. Only attention mixes tokens, and only within a sequence: each
sequence's queries meet its own keys, read in place from the pool through its block table
(`numpylm.serving.paged_attention`), after this step's keys and values are written into their
slots.

This is `numpylm.models.llama_inference.forward_logits` (whose helpers it calls) with a
different cache: the arithmetic per token is the same, and the tests prove the logits equal.
Like it, it multiplies q, k and v as one matrix and gate and up as another (the stepper's
`_plan`: a layer that cannot be laid out so goes projection by projection), rotates q and k
together, and decides once per step, not once per layer, how each sequence attends: a
decoding row whose keys are one run goes with all the others of its kind in one call
(`attend_newest`), a prompt chunk or a fragmented sequence on its own (`attend_runs`).
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

from numpylm.blas import matmul_rows
from numpylm.models.llama_inference import _mlp, _plan, _project, _qkv, _rms_norm
from numpylm.serving.paged_attention import attend_gathered, attend_newest, attend_runs
from numpylm.serving.paged_cache import PagedKVCache

__all__ = ["Feed", "forward_paged", "supports_paged"]

Feed = tuple[Hashable, Sequence[int]]  # (sequence id in the cache, its new token ids)


def supports_paged(model: Any) -> bool:
    """Whether `forward_paged` can run `model` (a Llama-family model)."""
    from numpylm.models.llama import Llama

    return isinstance(model, Llama)


def forward_paged(model: Any, cache: PagedKVCache, feeds: Sequence[Feed],
                  attention: str = "runs") -> np.ndarray:
    """Logits (B, V) after the last new token of each of `feeds` (sequence id, new token ids),
    for a Llama `model` whose keys and values live in `cache`. Each sequence's new tokens take
    the positions after its cached ones; room for them must be reserved. `attention` is "runs"
    (read the pool in place) or "gather" (the readable copy), for the tests."""
    if attention not in ("runs", "gather"):
        raise ValueError(f"forward_paged: attention must be 'runs' or 'gather', got {attention!r}")
    c = model.config
    H, D, C = c.num_attention_heads, c.head_dim, c.hidden_size
    counts = [len(tokens) for _, tokens in feeds]
    if not feeds or min(counts) < 1:
        raise ValueError("forward_paged: every feed needs at least one new token")
    starts = [cache.lengths[seq] for seq, _ in feeds]
    ends = np.cumsum(counts)  # row ranges: sequence b owns rows ends[b] - counts[b]..ends[b]
    ids = np.concatenate([np.asarray(tokens, dtype=np.int64) for _, tokens in feeds])
    positions = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, counts)])
    slots = np.concatenate([cache.claim(seq, n) for (seq, _), n in zip(feeds, counts)])
    contiguous = (slice(int(slots[0]), int(slots[0]) + len(slots))
                  if np.all(np.diff(slots) == 1) else None)
    N = len(ids)
    plan = _plan(model)
    cos, sin = plan.rope(model, positions)  # (N, D/2), rows of a table computed once
    cos, sin = cos[:, None], sin[:, None]  # (N, 1, D/2): every head alike
    # Who attends how, decided once per step, not per layer: a decoding row whose keys are
    # one run goes with the others of its kind (`attend_newest`, one call a layer); a prompt
    # chunk or a fragmented sequence goes on its own (`attend_runs`, or the readable gather).
    newest, general = [], []
    for b, ((seq, _), n) in enumerate(zip(feeds, counts)):
        rows = slice(ends[b] - n, ends[b])
        if attention == "gather":
            general.append((rows, seq, starts[b]))
            continue
        runs = cache.runs(seq)
        if n == 1 and len(runs) == 1:
            newest.append((int(ends[b]) - 1, runs[0][1], runs[0][2]))
        else:
            general.append((rows, runs, starts[b]))
    attend = attend_runs if attention == "runs" else attend_gathered
    embedding = model.model.embed_tokens
    table = getattr(embedding, "packed", None) or embedding.weight.data
    x = table[ids].reshape(N, C)  # a fresh array: the residual stream, updated in place
    out = np.empty((N, H * D), dtype=x.dtype)
    for i, (layer, (qkv, gate_up, o)) in enumerate(zip(model.model.layers,
                                                       plan.groups(model))):
        a, m = layer.self_attn, layer.mlp
        q, k, v = _qkv(_rms_norm(x, layer.input_layernorm), a, qkv, cos, sin, (N,))
        if contiguous is not None:  # the new tokens' slots in one piece: a slice, no index
            cache.k[i][:, contiguous] = k.transpose(1, 0, 2)  # (Hkv, N, D)
            cache.v[i][:, contiguous] = v.transpose(1, 0, 2)
        else:
            cache.k[i][:, slots] = k.transpose(1, 0, 2)
            cache.v[i][:, slots] = v.transpose(1, 0, 2)
        attend_newest(cache, i, q, out, newest)
        for rows, where, start in general:
            out[rows] = attend(cache, where, i, q[rows], start)
        x += _project(out, o, a.o_proj)
        x += _mlp(_rms_norm(x, layer.post_attention_layernorm), m, gate_up)
    x = _rms_norm(x[ends - 1], model.model.norm)  # the last new token of each sequence
    head = getattr(model, "packed_head", None)
    return head(x) if head is not None else matmul_rows(x, model.head_weight().T)
