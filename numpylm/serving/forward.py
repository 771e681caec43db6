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
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

import numpy as np

from numpylm.models.llama_inference import _linear, _rms_norm, _rope_, _swiglu_
from numpylm.serving.paged_attention import attend_gathered, attend_runs
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
    H, Hkv, D, C = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
    counts = [len(tokens) for _, tokens in feeds]
    if not feeds or min(counts) < 1:
        raise ValueError("forward_paged: every feed needs at least one new token")
    starts = [cache.lengths[seq] for seq, _ in feeds]
    ends = np.cumsum(counts)  # row ranges: sequence b owns rows ends[b] - counts[b]..ends[b]
    ids = np.concatenate([np.asarray(tokens, dtype=np.int64) for _, tokens in feeds])
    positions = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, counts)])
    slots = np.concatenate([cache.claim(seq, n) for (seq, _), n in zip(feeds, counts)])
    attend: Callable[..., np.ndarray]
    if attention == "runs":
        where = [cache.runs(seq) for seq, _ in feeds]  # once per step, not per layer
        attend = attend_runs
    else:
        where = [seq for seq, _ in feeds]
        attend = attend_gathered
    N = len(ids)
    cos, sin = model.rope_tables(positions[None])  # (1, N, D/2)
    cos, sin = cos[:, :, None], sin[:, :, None]  # (1, N, 1, D/2): every head alike
    embedding = model.model.embed_tokens
    rows = getattr(embedding, "packed", None) or embedding.weight.data
    x = rows[ids].reshape(N, C)  # a fresh array: the residual stream, updated in place
    out = np.empty((N, H * D), dtype=x.dtype)
    for i, layer in enumerate(model.model.layers):
        a = layer.self_attn
        h = _rms_norm(x, layer.input_layernorm)
        q = _rope_(_linear(h, a.q_proj).reshape(1, N, H, D), cos, sin)[0]
        k = _rope_(_linear(h, a.k_proj).reshape(1, N, Hkv, D), cos, sin)[0]
        v = _linear(h, a.v_proj).reshape(N, Hkv, D)
        cache.k[i][:, slots] = k.transpose(1, 0, 2)  # (Hkv, N, D) into the new tokens' slots
        cache.v[i][:, slots] = v.transpose(1, 0, 2)
        for b, n in enumerate(counts):
            r = slice(ends[b] - n, ends[b])
            out[r] = attend(cache, where[b], i, q[r], starts[b])
        x += _linear(out, a.o_proj)
        h = _rms_norm(x, layer.post_attention_layernorm)
        m = layer.mlp
        g = _swiglu_(_linear(h, m.gate_proj), _linear(h, m.up_proj))
        x += _linear(g, m.down_proj)
    x = _rms_norm(x[ends - 1], model.model.norm)  # the last new token of each sequence
    head = getattr(model, "packed_head", None)
    return head(x) if head is not None else x @ model.head_weight().T
