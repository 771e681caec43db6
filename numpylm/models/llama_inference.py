"""Llama's forward pass for inference, in plain numpy: the same arithmetic as `Llama.forward`,
without the autograd graph (part 3 of the guide: what serving a model costs).

Decoding one token reads every weight once and does one multiply-add with it, so its time
is the time to stream the weights from memory (540 MB a token for SmolLM2-135M in float32)
plus whatever else runs per token. This twin keeps the rest small: numpy and BLAS called
directly, the residual stream updated in place, the SwiGLU product and the RMSNorm scaling
done in place, and grouped-query attention for the one newest token done as G query rows
per key-value head, so the cache of Hkv heads is read once and never repeated; a few new
tokens (drafted tokens to check) attend the same way, T * G rows per key-value head with the
last rows of the causal mask (`ops_attention.attend_recent`, shared with GPT's stepper), and
only a longer run (a prompt) goes through the blocked kernel of the fused op. It is the
stepper behind `Llama.step`; the tests prove it gives `Llama.forward`'s logits.

Per token, a layer's seven products with one row are seven BLAS calls, and the work between
them is some fifty small numpy calls; at 30 layers the calls alone cost a few ms a token. So
the stepper lays each layer's q, k and v projections side by side in one matrix, and gate and
up in another (`_Plan`): one product for q, k and v, one for gate and up. Gate and up, o and
the LM head are stored (in, out), which one row streams faster here than the (out, in) of a
parameter. The parameters become views of those matrices (the same numbers under the same
names; an optimiser's in-place update or a LoRA merge changes them there), and a parameter
given a new array (`model.to`, packing, loading, training's C-ordered copies) is noticed at the
next call, which lays the layer out again or, for a layer that cannot be (packed,
LoRA-wrapped), multiplies projection by projection as before. RoPE rotates q and k together,
with cos and sin rows looked up in a table computed once (`rope_tables` of 0..P-1: the same
numbers as for the positions alone).
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from numpylm.autograd.ops_attention import (RECENT_TOKENS, _attention_forward, _from_rows,
                                            _grouped_mask, _to_rows, attend_recent)
from numpylm.autograd.ops_rope import rope_tables
from numpylm.blas import matmul_rows
from numpylm.nn import Linear, Parameter


def _rms_norm(x: np.ndarray, norm) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, as `F.rms_norm`, (N, C)."""
    if x.shape[0] == 1:  # decoding one token: the scale is one number, Python's arithmetic
        rstd = 1.0 / math.sqrt(float(np.vecdot(x[0], x[0])) / x.shape[1] + norm.eps)
        y = x * rstd  # stays float32 (a Python number does not widen an array)
        y *= norm.weight.data
        return y
    ms = np.vecdot(x, x)[:, None]  # sum of squares (a ufunc: no einsum parsing), then the mean
    ms /= x.shape[-1]
    ms += norm.eps
    np.sqrt(ms, out=ms)
    np.reciprocal(ms, out=ms)  # rstd, multiplied in as `F.rms_norm` does
    y = x * ms
    y *= norm.weight.data
    return y


def _linear(x: np.ndarray, linear) -> np.ndarray:
    """x W^T + b for x (N, in), W stored (out, in): BLAS reads W's rows in order. A layer
    packed by `numpylm.models.llama_packed` multiplies with its quantized blocks instead."""
    packed = getattr(linear, "packed", None)
    if packed is not None:
        return packed(x)
    y = matmul_rows(x, linear.weight.data.T)
    if linear.bias is not None:
        y += linear.bias.data
    return y


def _swiglu_(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up, into gate for one row. One row (decoding): gate * sigmoid(gate) * up
    with sigmoid as (1 + tanh(x/2)) / 2, `F.swiglu`'s form, which never overflows. Many rows
    (a prompt): up * gate / (1 + exp(-gate)) in a new array, four passes instead of six, with
    exp cheaper than tanh; exp(-gate) overflows to inf where gate < -88, and gate / inf is
    -0.0, silu's limit there."""
    if gate.shape[0] > 1:
        s = np.negative(gate)
        with np.errstate(over="ignore"):
            np.exp(s, out=s)
        s += 1.0
        np.divide(up, s, out=s)
        s *= gate
        return s
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
        if T <= RECENT_TOKENS and attn_mask is None:  # one token, or a few drafted ones
            return attend_recent(q, k, v)
    q = q.transpose(0, 2, 1, 3)  # (B, H, T, D)
    G = H // k.shape[1]
    if G == 1:
        out, _ = _attention_forward(q, k, v, True, attn_mask)
    else:  # the fused op's grouped rows: G query heads per key-value head, K/V not repeated
        mask = _grouped_mask(attn_mask, q, k, v, G)
        out = _from_rows(_attention_forward(_to_rows(q, G), k, v, True, mask, group=G)[0], G)
    return out.transpose(0, 2, 1, 3).reshape(B * T, H * D)


def _side_by_side(linears, transposed: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The weights (and biases) of `linears` as row blocks of one new matrix (and vector),
    each parameter rebound to a view of its block; None when they cannot share one (a layer
    packed or wrapped, mixed dtypes or widths, biases on some only).

    With `transposed` the new matrix is stored (in, out), the blocks side by side as columns,
    and each parameter becomes a transposed view of its columns: the same (out, in) numbers,
    laid out so that one row times the matrix streams it faster here (see `_Plan`)."""
    if not all(type(lin) is Linear and getattr(lin, "packed", None) is None
               for lin in linears):
        return None
    ws = [lin.weight.data for lin in linears]
    biased = {lin.bias is not None for lin in linears}
    if (len(biased) > 1 or any(w.ndim != 2 for w in ws)
            or len({(w.shape[1], w.dtype) for w in ws}) > 1):
        return None
    if transposed:  # C order (concatenating transposed views would give Fortran order)
        weight = np.empty((ws[0].shape[1], sum(w.shape[0] for w in ws)), dtype=ws[0].dtype)
        np.concatenate([w.T for w in ws], axis=1, out=weight)
    else:
        weight = np.concatenate(ws)
    bias = np.concatenate([lin.bias.data for lin in linears]) if True in biased else None
    start = 0
    for lin in linears:
        end = start + lin.weight.data.shape[0]
        lin.weight.data = weight[:, start:end].T if transposed else weight[start:end]
        if bias is not None:
            lin.bias.data = bias[start:end]
        start = end
    return weight, bias


class _Group:
    """Projections that read the same input, multiplied as one matrix (see `_side_by_side`)."""

    __slots__ = ("linears", "weight", "bias", "views", "operand")

    def __init__(self, linears, transposed: bool = False) -> None:
        self.linears = linears
        fused = _side_by_side(linears, transposed)
        self.weight, self.bias = fused if fused is not None else (None, None)
        # What multiplies the rows: x @ W.T for a matrix stored (out, in), x @ W for (in, out).
        self.operand = None if fused is None else self.weight if transposed else self.weight.T
        # Not laid out: multiplied one by one, which reads each layer afresh, so only a
        # different layer (an adapter put on or taken off) calls for another look.
        self.views = () if fused is None else tuple(
            (lin, lin.weight, lin.weight.data, lin.bias,
             None if lin.bias is None else lin.bias.data) for lin in linears)

    def valid(self, linears) -> bool:
        """Whether these are still the layers laid out, with their arrays untouched (the
        same parameters holding the same views)."""
        for lin, old in zip(linears, self.linears):
            if lin is not old:
                return False
        for lin, w, wd, b, bd in self.views:
            if lin.weight is not w or w.data is not wd or lin.bias is not b or (
                    b is not None and b.data is not bd):
                return False
        return True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = matmul_rows(x, self.operand)
        if self.bias is not None:
            y += self.bias
        return y


class _Plan:
    """A model's fused projection groups and its RoPE table.

    Per layer: q, k and v side by side, stored (out, in); o alone and gate and up side by
    side, stored (in, out). A row times a matrix of many more outputs than inputs streams
    faster from a matrix stored (in, out) on this machine's OpenBLAS (SmolLM2, two threads,
    every layer's weights read from memory: gate/up 251 against 316 us, o 91 against 120),
    while down (fewer outputs than inputs) and q/k/v read faster as stored; measured by
    `benchmarks/bench_llama.py`'s floor, which times both layouts."""

    def __init__(self) -> None:
        self.layers: list[tuple[_Group, _Group, _Group]] = []
        self.rope_key = None
        self.cos = self.sin = None

    def groups(self, model) -> list[tuple[_Group, _Group, _Group]]:
        """(q/k/v, gate/up, o) of every layer, laid out again where a parameter changed; the
        LM head's matrix is laid out here too (`_lay_out_head`)."""
        layers = model.model.layers
        if len(self.layers) != len(layers):
            self.layers = [None] * len(layers)
        for i, layer in enumerate(layers):
            a, m = layer.self_attn, layer.mlp
            qkv, gate_up, o = (a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj), (a.o_proj,)
            old = self.layers[i]
            if old is None or not (old[0].valid(qkv) and old[1].valid(gate_up)
                                   and old[2].valid(o)):
                self.layers[i] = (_Group(qkv), _Group(gate_up, transposed=True),
                                  _Group(o, transposed=True))
        _lay_out_head(model)
        return self.layers

    def rope(self, model, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`model.rope_tables(positions)`, as rows of a table of 0..P-1 (grown by doubling)."""
        c = model.config
        dtype = model.model.embed_tokens.weight.dtype
        key = (c.head_dim, c.rope_theta, repr(c.rope_scaling), dtype)
        if positions.size and positions.min() < 0:  # no row of the table: compute them
            return model.rope_tables(positions)
        need = int(positions.max()) + 1 if positions.size else 1
        if key != self.rope_key or need > len(self.cos):
            size = max(need, 2 * len(self.cos) if key == self.rope_key else 256)
            self.cos, self.sin = rope_tables(np.arange(size), c.head_dim, c.rope_theta,
                                             c.rope_scaling, dtype=dtype)
            self.rope_key = key
        return self.cos[positions], self.sin[positions]


def _lay_out_head(model) -> None:
    """Store the LM head's (V, C) matrix (lm_head's, or the tied embedding's) as (C, V), its
    parameter a transposed view: the head is a row times a matrix of many outputs, which
    streams faster so (SmolLM2: 3.6 against 4.6 ms a token). Looking up an embedding row then
    reads with a stride, a few hundred numbers per token. Checked every step (a flag), since
    training, loading or `model.to` give the parameter a C-ordered array again."""
    if getattr(model, "packed_head", None) is not None:
        return
    owner = model.model.embed_tokens if model.lm_head is None else model.lm_head
    weight = getattr(owner, "weight", None)  # an adapter-wrapped head has none of its own
    if getattr(owner, "packed", None) is not None or not isinstance(weight, Parameter):
        return
    w = weight.data
    if w.ndim == 2 and not w.flags.f_contiguous:
        weight.data = np.ascontiguousarray(w.T).T


# One plan per model, outside it: a copy of the model (copy.deepcopy) copies no plan, and
# builds its own over its own arrays at its first step.
_PLANS: "weakref.WeakKeyDictionary[object, _Plan]" = weakref.WeakKeyDictionary()


def release_layout(model) -> None:
    """Give parameters laid out for decoding (views of the fused matrices, some transposed)
    C-ordered arrays of their own and drop the layout, so nothing holds the old matrices; the
    next decoding step lays the model out again. Training calls it first: a product's sums
    would otherwise depend on whether the model had decoded before (exact resume)."""
    for p in model.parameters():
        if not p.data.flags.c_contiguous:
            p.data = np.ascontiguousarray(p.data)
    _PLANS.pop(model, None)


def _plan(model) -> _Plan:
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = _Plan()
    return plan


def _qkv(h: np.ndarray, attn, qkv: "_Group", cos: np.ndarray, sin: np.ndarray,
         lead: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q and k (rotated) and v of the normalised rows h (N, C), each (*lead, heads, D) with
    N = prod(lead): one product when the layer is laid out (`qkv`), then q and k rotated
    together; projection by projection when it cannot be."""
    H, Hkv, D = attn.H, attn.Hkv, attn.D
    if qkv.weight is not None:
        y = qkv(h)  # (N, (H + 2 Hkv) D)
        qk = _rope_(y[:, :(H + Hkv) * D].reshape(*lead, H + Hkv, D), cos, sin)
        return qk[..., :H, :], qk[..., H:, :], y[:, (H + Hkv) * D:].reshape(*lead, Hkv, D)
    q = _rope_(_linear(h, attn.q_proj).reshape(*lead, H, D), cos, sin)
    k = _rope_(_linear(h, attn.k_proj).reshape(*lead, Hkv, D), cos, sin)
    return q, k, _linear(h, attn.v_proj).reshape(*lead, Hkv, D)


def _project(x: np.ndarray, group: "_Group", linear) -> np.ndarray:
    """x through `linear`, laid out as `group` (one projection) when it could be."""
    return group(x) if group.weight is not None else _linear(x, linear)


def _mlp(h: np.ndarray, mlp, gate_up: "_Group") -> np.ndarray:
    """down(silu(gate(h)) * up(h)) of the normalised rows h (N, C): gate and up as one
    product (gate's columns, then up's) when the layer is laid out."""
    if gate_up.weight is not None:
        y = gate_up(h)  # (N, 2 I)
        half = y.shape[1] // 2
        g = _swiglu_(y[:, :half], y[:, half:])
    else:
        g = _swiglu_(_linear(h, mlp.gate_proj), _linear(h, mlp.up_proj))  # (N, I)
    return _linear(g, mlp.down_proj)


def forward_logits(model, idx: np.ndarray, position_ids: np.ndarray, kv_cache=None,
                   attn_mask=None, last_only: bool = False) -> np.ndarray:
    """Logits (B, T, V), or (B, 1, V) with `last_only`, for token ids idx (B, T) at
    `position_ids` (T,) or (B, T); `attn_mask` (B, 1, 1, L) is False at padding. The cache
    (Hkv heads) is advanced by T."""
    c = model.config
    B, T = idx.shape
    C = c.hidden_size
    if kv_cache is not None:  # once, not per layer: the layers write into it directly
        kv_cache.reserve(T)
    plan = _plan(model)
    cos, sin = plan.rope(model, np.broadcast_to(position_ids, (B, T)))  # (B, T, D/2)
    cos, sin = cos[:, :, None], sin[:, :, None]  # (B, T, 1, D/2): every head alike
    embedding = model.model.embed_tokens
    rows = getattr(embedding, "packed", None) or embedding.weight.data
    x = rows[idx].reshape(B * T, C)  # a fresh array
    for i, (layer, (qkv, gate_up, o)) in enumerate(zip(model.model.layers,
                                                       plan.groups(model))):
        a, m = layer.self_attn, layer.mlp
        q, k, v = _qkv(_rms_norm(x, layer.input_layernorm), a, qkv, cos, sin, (B, T))
        x += _project(_attention(q, k, v, kv_cache, i, attn_mask), o, a.o_proj)
        x += _mlp(_rms_norm(x, layer.post_attention_layernorm), m, gate_up)  # in place
    if kv_cache is not None:
        kv_cache.advance(T)
    x = x.reshape(B, T, C)
    if last_only:
        x = x[:, -1:]
    x = _rms_norm(x.reshape(-1, C), model.model.norm)
    # The LM head: (N, C) @ (C, V), one pass over a (V, C) matrix for one token.
    head = getattr(model, "packed_head", None)
    logits = head(x) if head is not None else matmul_rows(x, model.head_weight().T)
    return logits.reshape(B, -1, c.vocab_size)
