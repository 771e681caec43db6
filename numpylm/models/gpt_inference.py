"""GPT's forward pass for inference, in plain numpy: the same arithmetic as `GPT.forward`,
without the autograd graph (part 3 of the guide: what serving a model costs).

Generating one token with a KV cache does little arithmetic per weight (one multiply-add
per weight per token), so its time is the time to read the weights from memory plus
whatever else runs per token. Here "whatever else" would be the bookkeeping of some two
hundred autograd ops per token (wrapping, recording, checking); this twin calls numpy and
BLAS directly, updates the residual stream in place and reuses one attention kernel with
`numpylm.autograd.ops_attention`. It is the stepper behind `GPT.step` (decoding); it has no
dropout, and the tests show it gives the same logits as `GPT.forward` in eval mode.
"""
from __future__ import annotations

import math

import numpy as np

from numpylm.autograd.ops_attention import RECENT_TOKENS, _attention_forward, attend_recent
from numpylm.blas import matmul_rows

_GELU_C = math.sqrt(2.0 / math.pi)


def _layer_norm(x: np.ndarray, ln, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis, as `F.layer_norm`.

    Written for few rows, where the Python around each numpy call costs more than its
    arithmetic (this runs twice per layer per token): the sums are `np.add.reduce` and
    `np.vecdot` (no `.mean()` bookkeeping), and for one row (decoding) the mean and the
    scale are Python numbers, so the row itself is touched by four calls only.
    """
    n = x.shape[-1]
    if x.ndim == 2 and x.shape[0] == 1:
        xc = x - float(np.add.reduce(x[0])) / n  # a Python number keeps float32
        xc *= 1.0 / math.sqrt(float(np.vecdot(xc[0], xc[0])) / n + eps)
    else:
        xc = x - np.add.reduce(x, axis=-1, keepdims=True) * (1.0 / n)
        scale = np.vecdot(xc, xc)[..., None]
        scale *= 1.0 / n
        scale += eps
        np.sqrt(scale, out=scale)
        xc /= scale
    if ln.weight is not None:
        xc *= ln.weight.data
    if ln.bias is not None:
        xc += ln.bias.data
    return xc


def _linear(x: np.ndarray, conv) -> np.ndarray:
    """x @ W + b for x (N, in): GPT-2's Conv1D. The product is `blas.matmul_rows`: checking
    k + 1 drafted tokens multiplies 2-9 rows, where OpenBLAS's matrix product is slow for
    row counts that are not a multiple of its kernel's (2 or 3 rows cost 3-5x one row here)."""
    y = matmul_rows(x, conv.weight.data)
    if conv.bias is not None:
        y += conv.bias.data
    return y


def _gelu_(x: np.ndarray) -> np.ndarray:
    """x/2 (1 + tanh(c (x + 0.044715 x^3))) in place, as `F.gelu`."""
    t = x * x
    t *= 0.044715 * _GELU_C
    t += _GELU_C
    t *= x
    np.tanh(t, out=t)
    t += 1.0
    x *= t
    x *= 0.5
    return x


def _attention(qkv: np.ndarray, B: int, T: int, n_head: int, kv_cache, layer: int,
               attn_mask) -> np.ndarray:
    """Causal multi-head attention on packed projections qkv (B*T, 3C) -> (B*T, C)."""
    C = qkv.shape[-1] // 3
    heads = qkv.reshape(B, T, 3, n_head, C // n_head)
    q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, D)
    if kv_cache is not None:
        k, v = kv_cache.append(layer, k, v)  # (B, H, L, D): cached keys, then the new ones
        if T <= RECENT_TOKENS and attn_mask is None:  # one token, or a few drafted ones
            return attend_recent(heads[:, :, 0], k, v)  # q as (B, T, H, D)
    out = np.empty((B, T, n_head, C // n_head), dtype=qkv.dtype)
    _attention_forward(q, k, v, True, attn_mask, out=out.transpose(0, 2, 1, 3))
    return out.reshape(B * T, C)


def forward_logits(model, idx: np.ndarray, position_ids: np.ndarray, kv_cache=None,
                   attn_mask=None, last_only: bool = False) -> np.ndarray:
    """Logits (B, T, V), or (B, 1, V) with `last_only`, for token ids idx (B, T).

    Arguments as in `GPT.forward` (checked by `GPT.step`); the cache is advanced by T.
    """
    c = model.config
    B, T = idx.shape
    C = c.n_embd
    eps = c.layer_norm_epsilon
    x = model.wte.weight.data[idx]  # (B, T, C), a fresh array: updated in place below
    x += model.wpe.weight.data[position_ids]
    x = x.reshape(B * T, C)
    for i, block in enumerate(model.h):
        a = _layer_norm(x, block.ln_1, eps)
        y = _attention(_linear(a, block.attn.c_attn), B, T, c.n_head, kv_cache, i, attn_mask)
        x += _linear(y, block.attn.c_proj)  # the residual stream, updated in place
        h = _gelu_(_linear(_layer_norm(x, block.ln_2, eps), block.mlp.c_fc))  # (B*T, 4C)
        x += _linear(h, block.mlp.c_proj)
    if kv_cache is not None:
        kv_cache.advance(T)
    x = x.reshape(B, T, C)
    if last_only:
        x = x[:, -1:]
    rows = x.shape[1]
    x = _layer_norm(x.reshape(-1, C), model.ln_f, eps)  # decoding: one row, the short path
    # The tied LM head: (B, T, C) @ (C, V). For one token this is one pass over wte.
    logits = matmul_rows(x, model.wte.weight.data.T)
    return logits.reshape(B, rows, -1)
