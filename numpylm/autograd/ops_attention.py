"""Scaled dot-product attention, the heart of the transformer, twice: once composed from
primitive ops (read it first) and once as a single fused op with a hand-derived backward.

For queries Q (..., Tq, D), keys K (..., Tk, D) and values V (..., Tk, Dv)
(Vaswani et al. 2017, eq. 1):

    S = Q K^T / sqrt(D)          scores, (..., Tq, Tk)
    S_ij = -inf where query i may not see key j (the causal mask, a padding mask)
    P = softmax(S) over j        attention weights, each row sums to 1
    O = P V                      (..., Tq, Dv)

The composed version builds this from `matmul`, `where` and `softmax`, and autograd
derives its gradient. The fused version exists for speed: it keeps one (Tq, Tk) array per
head alive instead of four (scores, masked scores, exponentials, weights), works on it in
place, and is one graph node instead of six. Its backward, for upstream gradient dO:

    dV = P^T dO
    dP = dO V^T
    dS = P * (dP - rowsum(dP * P)),   and rowsum(dP * P) = rowsum(dO * O) (cheaper: Dv, not Tk)
    dQ = dS K / sqrt(D),  dK = dS^T Q / sqrt(D)

`attention_backward_reference` is these five lines as written, unblocked; the tests prove it
equal to the fused backward `_attention_backward`, which works block by block and in place.

Causal masking aligns the last query with the last key: query i sees keys
j <= i + (Tk - Tq). With Tq == Tk this is the usual lower triangle; with a KV cache
(Tq new queries, Tk cached plus new keys) each new token sees everything before it.
A query row that may see no key at all (only possible with an `attn_mask`) outputs zeros.

Grouped-query attention (Ainslie et al. 2023; multi-query at Hkv = 1, Shazeer 2019): q has H
heads, k and v have Hkv heads with H = G * Hkv, and query head h reads key-value head h // G.
The readable way copies each K/V head G times (`composed.repeat_kv`) and attends as usual.
The fused op never copies K or V: it stacks the G query heads of a group as extra rows,
q (..., Hkv, G, Tq, D) -> (..., Hkv, Tq * G, D), so one (Tq G x D) by (D x Tk) product per
key-value head computes all G heads' scores, and dK = dS^T Q, dV = P^T dO sum over the
group's rows by themselves, without a G-times-larger gradient to reduce.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from numpylm.autograd import ops_math, ops_nn, ops_shape
from numpylm.autograd.composed import repeat_kv
from numpylm.autograd.op import op, unbroadcast
from numpylm.autograd.gradcheck_inputs import gradcheck_inputs
from numpylm.autograd.tensor import Tensor


@functools.lru_cache(maxsize=64)
def causal_block(Tq: int, Tk: int, group: int = 1) -> np.ndarray:
    """Boolean (Tq, Tk): True where query i may NOT see key j, i.e. j > i + (Tk - Tq).

    With `group` > 1 the rows are grouped-query rows (Tq * group, Tk): row r is query r // group.
    """
    i = np.arange(Tq * group)[:, None] // group
    j = np.arange(Tk)[None, :]
    blocked = j > i + (Tk - Tq)
    blocked.flags.writeable = False  # shared between calls through the cache
    return blocked


# Up to this many new tokens per decoding call (one, or a few drafted tokens to check) attend
# through `attend_recent`; a longer run (a prompt) goes through the blocked fused kernel.
RECENT_TOKENS = 16


@functools.lru_cache(maxsize=256)
def recent_causal_bias(Tq: int, Tk: int, group: int = 1) -> np.ndarray:
    """`causal_block` as an additive float32 bias, (Tq * group, Tk): 0 where the query may see
    the key, -inf where not; made once per shape and shared (read-only)."""
    bias = np.where(causal_block(Tq, Tk, group), np.float32(-np.inf), np.float32(0.0))
    bias.flags.writeable = False
    return bias


def attend_recent(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q K^T / sqrt(D) + causal mask) V for the T newest tokens of a decoding step,
    plain numpy (no graph): q (B, T, H, D) over every cached key k, v (B, Hkv, L, D), the last
    T of them the new tokens' own -> (B * T, H * D), the heads side by side.

    The G = H / Hkv query heads of a key-value head at time t become rows t * G .. t * G + G - 1
    (`_to_rows`' order), so one (T G x D) by (D x L) product per key-value head scores every new
    query against the unrepeated cache. The newest token sees every key, so at T = 1 there is
    no mask; for a few tokens it is the last T rows of the causal one (query t sees keys up to
    L - T + t). The blocked kernel's bookkeeping (blocks, a mask per call, copies into and out
    of grouped rows) costs more than these few rows' arithmetic, at one call per layer per step.
    """
    B, T, H, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    G = H // Hkv
    rows = np.multiply(q.reshape(B, T, Hkv, G, D).transpose(0, 2, 1, 3, 4),
                       1.0 / math.sqrt(D), dtype=q.dtype)  # (B, Hkv, T, G, D), a new array
    s = np.matmul(rows.reshape(B, Hkv, T * G, D), np.swapaxes(k, -1, -2))  # (B, Hkv, TG, L)
    if T > 1:
        s += recent_causal_bias(T, L, G)
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= np.add.reduce(s, axis=-1, keepdims=True)
    out = np.matmul(s, v).reshape(B, Hkv, T, G, D)
    return out.transpose(0, 2, 1, 3, 4).reshape(B * T, H * D)


def _mask_array(attn_mask) -> np.ndarray | None:
    """`attn_mask` (an array, a Tensor or None) as a boolean array, checked once per call."""
    if attn_mask is None:
        return None
    attn_mask = np.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
    if attn_mask.dtype != bool:
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be boolean "
                        f"(True = may attend), got dtype {attn_mask.dtype}")
    return attn_mask


def _blocked(Tq: int, Tk: int, causal: bool, attn_mask, group: int = 1) -> np.ndarray | None:
    """Where scores are set to -inf: the causal triangle and/or where the boolean
    `attn_mask` is False (`group`: see `causal_block`)."""
    # With one query (generating with a KV cache) the causal mask hides nothing.
    blocked = causal_block(Tq, Tk, group) if causal and Tq > 1 else None
    if attn_mask is not None:
        blocked = ~attn_mask if blocked is None else (blocked | ~attn_mask)
    return blocked


def _check(q, k, v) -> int:
    """Check the shapes; return G, the number of query heads per key-value head (axis -3),
    which is 1 unless k and v have fewer heads than q (a size-1 axis broadcasts as usual)."""
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"scaled_dot_product_attention: q, k, v need the same number (>= 2) "
                         f"of axes, got shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q (..., Tq, D), k (..., Tk, D) and "
                         f"v (..., Tk, Dv) do not fit: {q.shape}, {k.shape}, {v.shape}")
    if q.ndim >= 3 and k.shape[-3] == v.shape[-3] and q.shape[-3] not in (1, k.shape[-3]):
        H, Hkv = q.shape[-3], k.shape[-3]
        if H % Hkv:
            raise ValueError(f"scaled_dot_product_attention: {H} query heads cannot share "
                             f"{Hkv} key-value heads (the number of query heads must be a "
                             f"multiple of the number of key-value heads); shapes q {q.shape}, "
                             f"k {k.shape}, v {v.shape}")
        return H // Hkv
    try:
        np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the leading (batch, head) axes of q "
                         f"{q.shape}, k {k.shape} and v {v.shape} do not broadcast") from None
    return 1


def attention_composed(q: Tensor, k: Tensor, v: Tensor, causal: bool = True,
                       attn_mask=None) -> Tensor:
    """The readable twin of `scaled_dot_product_attention`, built from primitive ops.

    q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) -> (..., Tq, Dv). `attn_mask` is a
    boolean array broadcastable to (..., Tq, Tk), True where a query may attend to a key.
    With fewer key-value heads than query heads (grouped-query attention, axis -3), each
    K/V head is first copied to the query heads that read it (`repeat_kv`).
    """
    group = _check(q.data, k.data, v.data)
    if group > 1:
        k, v = repeat_kv(k, group), repeat_kv(v, group)
    D = q.shape[-1]
    scores = ops_math.matmul(q, ops_shape.transpose(k, axes=_swap_last(k.ndim)))  # (..., Tq, Tk)
    scores = ops_math.mul(scores, 1.0 / math.sqrt(D))
    blocked = _blocked(q.shape[-2], k.shape[-2], causal, _mask_array(attn_mask))
    if blocked is not None:
        scores = ops_shape.masked_fill(scores, blocked, -np.inf)
    weights = ops_nn.softmax(scores, axis=-1)  # (..., Tq, Tk), rows sum to 1
    return ops_math.matmul(weights, v)  # (..., Tq, Dv)


def _swap_last(ndim: int) -> tuple[int, ...]:
    return (*range(ndim - 2), ndim - 1, ndim - 2)


# Queries per block of the causal kernel (see _query_blocks).
QUERY_BLOCK = 64


def _query_blocks(Tq: int, Tk: int, causal: bool) -> list[tuple[int, int, int]]:
    """(first query, end query, end key) of each block of queries.

    Under the causal mask, queries a..b-1 see no key past b - 1 + (Tk - Tq), so each block
    multiplies only by the keys it can see: for Tq = Tk = 256 in blocks of 64 that skips
    the 6 of 16 score tiles that lie wholly above the diagonal, about 3/8 of the work of
    both matrix products and of the softmax, forward and backward.
    """
    if not causal or Tq <= QUERY_BLOCK or Tk < Tq:
        return [(0, Tq, Tk)]
    return [(a, min(a + QUERY_BLOCK, Tq), min(a + QUERY_BLOCK, Tq) + Tk - Tq)
            for a in range(0, Tq, QUERY_BLOCK)]


def _softmax_rows_(p: np.ndarray, guard: bool) -> None:
    """Row-wise softmax of p (..., L) in place. With `guard` (some scores blocked), a fully
    blocked row has max -inf; shifting it by 0 instead keeps exp at 0 (not nan), and
    dividing by 1 instead of its zero sum gives a zero row. (Not shared among threads: it
    runs between two matrix products, while OpenBLAS's own threads still spin, and threads
    of ours made it slower on a busy machine, 1.46x.)"""
    m = p.max(axis=-1, keepdims=True)
    if guard:
        m[np.isneginf(m)] = 0.0
    p -= m
    np.exp(p, out=p)
    total = p.sum(axis=-1, keepdims=True)
    if guard:
        total[total == 0] = 1.0
    np.reciprocal(total, out=total)
    p *= total


def _attention_forward(q, k, v, causal, attn_mask, out=None, group=1):
    """O = softmax(Q K^T / sqrt(D) + mask) V, written into `out` if given.

    With `group` G > 1, q, `attn_mask` and O are in grouped rows (see `_to_rows`): row
    t * G + j of q is query t of the group's j-th head. Returns O and, for the backward pass,
    the attention weights of each block of rows as (first row, end row, end key, P) with
    P (..., end - first, end key).
    """
    Tq, Tk = q.shape[-2] // group, k.shape[-2]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if out is None:
        out = np.empty(batch + (Tq * group, v.shape[-1]), dtype=np.result_type(q, k, v))
    attn_mask = _mask_array(attn_mask)
    if attn_mask is not None:
        try:
            attn_mask = np.broadcast_to(attn_mask, batch + (Tq * group, Tk))
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape "
                             f"{np.shape(attn_mask)} does not broadcast to the scores' shape "
                             f"{batch + (Tq, Tk)}") from None
    # Scale Q (Tq x D numbers) rather than S (Tq x Tk): the same product, fewer multiplies.
    qs = q * np.asarray(1.0 / math.sqrt(q.shape[-1]), dtype=q.dtype)
    blocks = []
    for a, b, kend in _query_blocks(Tq, Tk, causal):
        a, b = a * group, b * group  # queries a..b-1 are rows a*G..b*G-1
        p = np.matmul(qs[..., a:b, :], np.swapaxes(k[..., :kend, :], -1, -2))  # S, then P
        mask = None if attn_mask is None else attn_mask[..., a:b, :kend]
        blocked = _blocked((b - a) // group, kend, causal, mask, group)
        if blocked is not None:
            np.copyto(p, -np.inf, where=np.broadcast_to(blocked, p.shape))
        _softmax_rows_(p, blocked is not None)
        np.matmul(p, v[..., :kend, :], out=out[..., a:b, :])
        blocks.append((a, b, kend, p))
    return out, blocks


def _attention_backward(g, q, k, v, o, blocks, dq=None, dk=None, dv=None):
    """(dQ, dK, dV) from dO = g; each written into the given array when one is passed.

    q, g, o and dQ are in the rows of the forward pass (grouped rows for grouped-query
    attention); dK and dV then sum over every row that read them, the group's heads included.
    """
    scale = np.asarray(1.0 / math.sqrt(q.shape[-1]), dtype=g.dtype)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if dq is None:
        dq = np.empty(batch + q.shape[-2:], dtype=g.dtype)
        dk = np.empty(batch + k.shape[-2:], dtype=g.dtype)
        dv = np.empty(batch + v.shape[-2:], dtype=g.dtype)
    # rowsum(dP * P) = sum_j P_ij sum_d dO_id V_jd = sum_d dO_id O_id
    row = np.einsum("...d,...d->...", g, o)[..., None]  # (..., Tq, 1)
    # The last block sees every key, so it writes dK and dV; earlier blocks add to them.
    for i, (a, b, kend, p) in enumerate(reversed(blocks)):
        ga = g[..., a:b, :]
        ds = np.matmul(ga, np.swapaxes(v[..., :kend, :], -1, -2))  # dP, then dS in place
        ds -= row[..., a:b, :]
        ds *= p
        dqa = dq[..., a:b, :]
        np.matmul(ds, k[..., :kend, :], out=dqa)  # dQ = dS K / sqrt(D): the scale on the
        dqa *= scale  # (Tq x D) product rather than on dS (Tq x Tk), the larger
        pt, dst = np.swapaxes(p, -1, -2), np.swapaxes(ds, -1, -2)
        if i == 0:
            np.matmul(pt, ga, out=dv)  # dV = P^T dO
            np.matmul(dst, q[..., a:b, :], out=dk)  # dK = dS^T Q, scaled once at the end
        else:
            dv[..., :kend, :] += pt @ ga
            dk[..., :kend, :] += dst @ q[..., a:b, :]
    dk *= scale
    return dq, dk, dv


def attention_backward_reference(g, q, k, v, causal: bool = True, attn_mask=None):
    """(dQ, dK, dV) for upstream gradient dO = g: the module docstring's formulas as written.

    The readable twin of `_attention_backward`: no blocks, nothing in place, P recomputed,
    rowsum(dP * P) taken literally. q (..., H, Tq, D), k (..., Hkv, Tk, D), v (..., Hkv, Tk, Dv)
    as for `scaled_dot_product_attention`; returns arrays of the shapes of q, k and v.
    """
    q, k, v, g = (np.asarray(a) for a in (q, k, v, g))
    G = _check(q, k, v)
    kr, vr = (np.repeat(x, G, axis=-3) for x in (k, v))  # query head h reads K/V head h // G
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = q @ np.swapaxes(kr, -1, -2) * scale  # S = Q K^T / sqrt(D)
    blocked = _blocked(q.shape[-2], k.shape[-2], causal, _mask_array(attn_mask))
    if blocked is not None:
        s = np.where(blocked, -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(m), 0.0, m))  # a fully blocked row: all zeros
    p = e / np.maximum(e.sum(axis=-1, keepdims=True), np.finfo(e.dtype).tiny)  # P = softmax(S)
    dv = np.swapaxes(p, -1, -2) @ g  # dV = P^T dO
    dp = g @ np.swapaxes(vr, -1, -2)  # dP = dO V^T
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))  # dS = P * (dP - rowsum(dP * P))
    dq = ds @ kr * scale  # dQ = dS K / sqrt(D)
    dk = np.swapaxes(ds, -1, -2) @ q * scale  # dK = dS^T Q / sqrt(D)
    if G > 1:  # the G query heads sharing a K/V head add their gradients into it
        dk, dv = (x.reshape(x.shape[:-3] + (-1, G) + x.shape[-2:]).sum(axis=-3) for x in (dk, dv))
    return unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape)


def _to_rows(x: np.ndarray, G: int) -> np.ndarray:
    """(..., Hkv * G, T, D) -> (..., Hkv, T * G, D): row t * G + j is head (kv, j) at time t.

    Time-major rows keep each block of queries of the causal kernel contiguous."""
    *lead, H, T, D = x.shape
    x = x.reshape(*lead, H // G, G, T, D)
    return np.swapaxes(x, -3, -2).reshape(*lead, H // G, T * G, D)


def _from_rows(x: np.ndarray, G: int) -> np.ndarray:
    """The inverse of `_to_rows`: (..., Hkv, T * G, D) -> (..., Hkv * G, T, D)."""
    *lead, Hkv, TG, D = x.shape
    x = x.reshape(*lead, Hkv, TG // G, G, D)
    return np.swapaxes(x, -3, -2).reshape(*lead, Hkv * G, TG // G, D)


def _grouped_mask(attn_mask, q, k, v, G: int) -> np.ndarray | None:
    """`attn_mask`, broadcastable to (..., H, Tq, Tk), in the grouped rows of q."""
    attn_mask = _mask_array(attn_mask)
    if attn_mask is None:
        return None
    H, Tq, Tk = q.shape[-3], q.shape[-2], k.shape[-2]
    scores = np.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3]) + (H, Tq, Tk)
    try:
        fits = np.broadcast_shapes(attn_mask.shape, scores) == scores
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {attn_mask.shape} "
                         f"does not broadcast to the scores' shape {scores}")
    m = attn_mask.reshape((1,) * (3 - attn_mask.ndim) + attn_mask.shape)
    if m.shape[-3] == 1:  # the same mask for every head (a padding mask, say)
        return m if m.shape[-2] == 1 else np.repeat(m, G, axis=-2)  # row t * G + j is query t
    return _to_rows(np.broadcast_to(m, m.shape[:-2] + (Tq, Tk)), G)


@op
def scaled_dot_product_attention(q, k, v, causal=True, attn_mask=None):
    """softmax(Q K^T / sqrt(D) + mask) V in one op; see the module docstring for the math.

    q (..., H, Tq, D), k (..., Hkv, Tk, D), v (..., Hkv, Tk, Dv) -> (..., H, Tq, Dv), where
    Hkv = H (multi-head), or Hkv divides H (grouped-query attention: query head h reads
    key-value head h // (H / Hkv); multi-query at Hkv = 1); K and V are never repeated.
    `causal` hides later keys (bottom-right aligned, so Tq < Tk is a KV cache);
    `attn_mask`, boolean and broadcastable to (..., H, Tq, Tk), is True where a query may
    attend to a key.
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    G = _check(q, k, v)
    if G == 1:
        o, blocks = _attention_forward(q, k, v, causal, attn_mask)

        def backward(g):
            dq, dk, dv = _attention_backward(g, q, k, v, o, blocks)
            return dq, dk, dv, None, None

        return o, backward

    # Grouped-query attention: the G query heads of each K/V head become rows (copies of q,
    # O and their gradients, which are small; never of K, V or the scores).
    q_rows = _to_rows(q, G)  # (..., Hkv, Tq * G, D)
    mask = _grouped_mask(attn_mask, q, k, v, G)
    o_rows, blocks = _attention_forward(q_rows, k, v, causal, mask, group=G)

    def backward_grouped(g):
        dq, dk, dv = _attention_backward(_to_rows(g, G), q_rows, k, v, o_rows, blocks)
        return _from_rows(dq, G), dk, dv, None, None

    return _from_rows(o_rows, G), backward_grouped


@op
def packed_self_attention(qkv, n_head, causal=True, attn_mask=None):
    """Multi-head self-attention on GPT's packed projections: qkv (B, T, 3C) -> (B, T, C).

    The same as splitting qkv into q, k, v, each (B, T, C) -> (B, H, T, D) with D = C / H,
    calling `scaled_dot_product_attention` and putting the heads side by side again, but
    the split and the merge are strided views: no copies forward, and the backward writes
    dQ, dK and dV straight into one (B, T, 3C) gradient instead of three zero-padded ones.
    """
    qkv = np.asarray(qkv)
    B, T, C3 = qkv.shape
    if C3 % (3 * n_head):
        raise ValueError(f"packed_self_attention: the last axis of qkv {qkv.shape} must be "
                         f"3 * n_head * head_size with n_head = {n_head}")
    D = C3 // (3 * n_head)
    heads = qkv.reshape(B, T, 3, n_head, D)
    q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, D) views
    out = np.empty((B, T, n_head, D), dtype=qkv.dtype)
    o, blocks = _attention_forward(q, k, v, causal, attn_mask, out=out.transpose(0, 2, 1, 3))

    def backward(g):
        g = g.reshape(B, T, n_head, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
        grad = np.empty((B, T, 3, n_head, D), dtype=g.dtype)
        dq, dk, dv = (grad[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        _attention_backward(g, q, k, v, o, blocks, dq, dk, dv)
        return grad.reshape(B, T, C3), None, None, None

    return out.reshape(B, T, C3 // 3), backward


@gradcheck_inputs("scaled_dot_product_attention")
def _sample(rng: np.random.Generator):  # 4 query heads sharing 2 key-value heads
    q = rng.standard_normal((2, 4, 3, 4))
    k = rng.standard_normal((2, 2, 5, 4))
    v = rng.standard_normal((2, 2, 5, 3))
    return (lambda q, k, v: scaled_dot_product_attention(q, k, v, causal=True)), (q, k, v)


@gradcheck_inputs("packed_self_attention")
def _sample_packed(rng: np.random.Generator):
    qkv = rng.standard_normal((2, 3, 12))  # B = 2, T = 3, C = 4 in 2 heads of size 2
    return (lambda x: packed_self_attention(x, 2)), (qkv,)
