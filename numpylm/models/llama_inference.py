"""Llama's forward pass for inference, in plain numpy: the same arithmetic as `Llama.forward`,
without the autograd graph (part 3 of the guide: what serving a model costs).

Decoding one token reads every weight once and does one multiply-add with it, so its time
is the time to stream the weights from memory (540 MB a token for SmolLM2-135M in float32)
plus whatever else runs per token. This twin keeps the rest small: numpy and BLAS called
directly, the residual stream updated in place, the SwiGLU product and the RMSNorm scaling
done in place, and grouped-query attention for the one newest token done as G query rows
per key-value head, so the cache of Hkv heads is read once and never repeated. It is the
stepper behind `Llama.step`; the tests prove it gives `Llama.forward`'s logits.
"""
from __future__ import annotations

import math

import numpy as np

from numpylm.autograd.ops_attention import (_attention_forward, _from_rows, _grouped_mask,
                                            _to_rows)


def _rms_norm(x: np.ndarray, norm) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, as `F.rms_norm`, (N, C)."""
    ms = np.einsum("nc,nc->n", x, x)[:, None]  # sum of squares, then the mean in place
    ms *= 1.0 / x.shape[-1]
    ms += norm.eps
    np.sqrt(ms, out=ms)
    y = x / ms
    y *= norm.weight.data
    return y


def _linear(x: np.ndarray, linear) -> np.ndarray:
    """x W^T + b for x (N, in), W stored (out, in): BLAS reads W's rows in order. A layer
    packed by `numpylm.models.llama_packed` multiplies with its quantized blocks instead."""
    packed = getattr(linear, "packed", None)
    if packed is not None:
        return packed(x)
    y = x @ linear.weight.data.T
    if linear.bias is not None:
        y += linear.bias.data
    return y


def _swiglu_(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up into gate: gate * sigmoid(gate) * up, sigmoid as (1 + tanh(x/2)) / 2
    (`F.swiglu`'s form, which never overflows)."""
    s = np.multiply(gate, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    gate *= s
    gate *= up
    return gate


def _rope_(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE in place, the arithmetic of `F.rope`: x (B, T, n, D) with cos and
    sin (B, T, 1, D/2); pairs (i, i + D/2) become (x1 cos - x2 sin, x2 cos + x1 sin).
    (`apply_rope` checks its shapes each call, which costs more than this rotation.)"""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    x2_sin, x1_sin = x2 * sin, x1 * sin
    x1 *= cos
    x1 -= x2_sin
    x2 *= cos
    x2 += x1_sin
    return x


def _attend_newest(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q K^T / sqrt(D)) V for one new token, q (B, H, D), k and v (B, Hkv, L, D).

    The G query heads of each key-value head are stacked as G rows, (B, Hkv, G, D), so one
    (G x D) by (D x L) product per key-value head scores them all against the unrepeated
    cache. The newest token may see every cached key: no mask."""
    B, H, D = q.shape
    Hkv = k.shape[1]
    qg = q.reshape(B, Hkv, H // Hkv, D) * (1.0 / math.sqrt(D))
    s = np.matmul(qg, np.swapaxes(k, -1, -2))  # (B, Hkv, G, L)
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= np.add.reduce(s, axis=-1, keepdims=True)
    return np.matmul(s, v).reshape(B, H * D)  # (B, Hkv, G, D) -> (B, H D)


def _attention(q, k, v, kv_cache, layer: int, attn_mask) -> np.ndarray:
    """q (B, T, H, D), k and v (B, T, Hkv, D) of the new tokens -> (B * T, H * D)."""
    B, T, H, D = q.shape
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, Hkv, T, D)
    if kv_cache is not None:
        # KVCache.append's work without its checks (the shapes are ours): copy the new keys
        # and values into place, then view the cached ones and the new ones together.
        end = kv_cache.length + T
        kv_cache.k[layer, :, :, kv_cache.length:end] = k
        kv_cache.v[layer, :, :, kv_cache.length:end] = v
        k, v = kv_cache.k[layer, :, :, :end], kv_cache.v[layer, :, :, :end]  # (B, Hkv, L, D)
        if T == 1 and attn_mask is None:
            return _attend_newest(q[:, 0], k, v)
    q = q.transpose(0, 2, 1, 3)  # (B, H, T, D)
    G = H // k.shape[1]
    if G == 1:
        out, _ = _attention_forward(q, k, v, True, attn_mask)
    else:  # the fused op's grouped rows: G query heads per key-value head, K/V not repeated
        mask = _grouped_mask(attn_mask, q, k, v, G)
        out = _from_rows(_attention_forward(_to_rows(q, G), k, v, True, mask, group=G)[0], G)
    return out.transpose(0, 2, 1, 3).reshape(B * T, H * D)


def forward_logits(model, idx: np.ndarray, position_ids: np.ndarray, kv_cache=None,
                   attn_mask=None, last_only: bool = False) -> np.ndarray:
    """Logits (B, T, V), or (B, 1, V) with `last_only`, for token ids idx (B, T) at
    `position_ids` (T,) or (B, T); `attn_mask` (B, 1, 1, L) is False at padding. The cache
    (Hkv heads) is advanced by T."""
    c = model.config
    B, T = idx.shape
    C, H, Hkv, D = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    if kv_cache is not None:  # once, not per layer: the layers write into it directly
        kv_cache.reserve(T)
    cos, sin = model.rope_tables(np.broadcast_to(position_ids, (B, T)))  # (B, T, D/2)
    cos, sin = cos[:, :, None], sin[:, :, None]  # (B, T, 1, D/2): every head alike
    embedding = model.model.embed_tokens
    rows = getattr(embedding, "packed", None) or embedding.weight.data
    x = rows[idx].reshape(B * T, C)  # a fresh array
    for i, layer in enumerate(model.model.layers):
        a = layer.self_attn
        h = _rms_norm(x, layer.input_layernorm)
        q = _rope_(_linear(h, a.q_proj).reshape(B, T, H, D), cos, sin)
        k = _rope_(_linear(h, a.k_proj).reshape(B, T, Hkv, D), cos, sin)
        v = _linear(h, a.v_proj).reshape(B, T, Hkv, D)
        x += _linear(_attention(q, k, v, kv_cache, i, attn_mask), a.o_proj)
        h = _rms_norm(x, layer.post_attention_layernorm)
        m = layer.mlp
        g = _swiglu_(_linear(h, m.gate_proj), _linear(h, m.up_proj))  # (B T, I)
        x += _linear(g, m.down_proj)  # the residual stream, updated in place
    if kv_cache is not None:
        kv_cache.advance(T)
    x = x.reshape(B, T, C)
    if last_only:
        x = x[:, -1:]
    x = _rms_norm(x.reshape(-1, C), model.model.norm)
    # The LM head: (N, C) @ (C, V), one pass over a (V, C) matrix for one token.
    head = getattr(model, "packed_head", None)
    logits = head(x) if head is not None else x @ model.head_weight().T
    return logits.reshape(B, -1, c.vocab_size)
