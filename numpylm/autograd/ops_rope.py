"""Rotary position embeddings (RoPE, Su et al. 2021): position enters attention as a rotation
of each query and key, so that a score q_m . k_n depends only on the offset m - n.

Split a head's D numbers into D/2 pairs (x1, x2). Pair i at position m turns by the angle
m * theta_i, with theta_i = rope_theta^(-2i/D) (fast turns first, slow turns last):

    x1' = x1 cos(m theta_i) - x2 sin(m theta_i)
    x2' = x2 cos(m theta_i) + x1 sin(m theta_i)

Because R(a)^T R(b) = R(b - a), the score (R(m theta) q) . (R(n theta) k) = q . R((n - m) theta) k
sees only the distance between the two tokens. A rotation is orthogonal, so the gradient of
the op is the transpose rotation, that is the inverse one: rotate the upstream gradient by
-theta (the same formula with sin negated).

Which numbers form a pair is a convention, and there are two:

    "rotate half"  (HF transformers, `interleaved=False`): pairs (i, i + D/2)
    "interleaved"  (the paper, Meta's original code, GGUF/llama.cpp, `interleaved=True`):
                   pairs (2i, 2i + 1)

Both give the same model if the rows of the q and k projections are permuted to match, and
this is the most common cause of wrong logits when Llama weights are ported: with the wrong
convention nothing crashes and every shape fits, yet the pairs rotated together are not the
pairs the model was trained with, so positions are scrambled and the output is fluent-looking
nonsense or simply worse. Within every head of size D, an interleaved checkpoint's row 2i
is the rotate-half checkpoint's row i and its row 2i + 1 is row i + D/2. For D = 8:

    interleaved row:   0  1  2  3  4  5  6  7
    rotate-half row:   0  4  1  5  2  6  3  7      (pairs (0,4) (1,5) (2,6) (3,7))

`interleaved_to_rotate_half` and `rotate_half_to_interleaved` apply this to q/k weights and
biases (k with the number of key-value heads); v and o are not rotated and never permuted.

Here: `rope_tables` (cos and sin from positions, with Llama 3's frequency scaling),
`apply_rope` (plain numpy, for a fast inference path), the op `rope` with its backward, and
the weight permutations. The readable twin built from primitive ops is
`numpylm.autograd.composed.rope`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from numpylm.autograd import workspace
from numpylm.autograd.gradcheck_inputs import gradcheck_inputs
from numpylm.autograd.op import op


def _llama3_inv_freq(inv_freq: np.ndarray, rope_scaling: Mapping[str, Any]) -> np.ndarray:
    """Llama 3.1's frequency scaling: slow pairs (wavelength above the original context /
    low_freq_factor) turn `factor` times slower, fast pairs (wavelength below the original
    context / high_freq_factor) are kept, and the ones between are blended linearly in
    context / wavelength. In float32, step by step as HF transformers computes it."""
    def field(name: str) -> float:
        if name not in rope_scaling:
            raise ValueError(f"rope_scaling.{name} is missing (needed by rope_type 'llama3')")
        return rope_scaling[name]
    factor, low, high = field("factor"), field("low_freq_factor"), field("high_freq_factor")
    context = field("original_max_position_embeddings")
    if high == low:
        raise ValueError(f"rope_scaling.high_freq_factor must differ from low_freq_factor, "
                         f"both are {low}")
    f32 = np.float32
    # (a / x is written 1/x * a, as PyTorch computes a number over a tensor: same rounding.)
    wavelen = np.reciprocal(inv_freq) * f32(2 * math.pi)
    scaled = np.where(wavelen > f32(context / low), inv_freq / f32(factor), inv_freq)
    smooth = (np.reciprocal(wavelen) * f32(context) - f32(low)) / f32(high - low)
    blended = (f32(1) - smooth) * scaled / f32(factor) + smooth * scaled
    medium = ~(wavelen < f32(context / high)) & ~(wavelen > f32(context / low))
    return np.where(medium, blended, scaled).astype(f32)


def rope_inv_freq(head_dim: int, rope_theta: float = 10000.0,
                  rope_scaling: Mapping[str, Any] | None = None) -> np.ndarray:
    """theta_i = rope_theta^(-2i / head_dim) for i < head_dim / 2, float32 (D/2,).

    `rope_scaling` is None, {"rope_type": "default"}, or Llama 3's {"rope_type" (or "type"):
    "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}. Anything else is a ValueError naming the field.
    """
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number to form pairs, got {head_dim}")
    if not rope_theta > 0:
        raise ValueError(f"rope_theta must be positive, got {rope_theta}")
    # float32 like HF transformers, so that the tables match its numbers to the last bit or so.
    exponents = np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)
    inv_freq = np.float32(1.0) / (np.float32(rope_theta) ** exponents)
    if rope_scaling is None:
        return inv_freq
    if not isinstance(rope_scaling, Mapping):
        raise ValueError(f"rope_scaling must be null or an object, got {rope_scaling!r}")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind == "default":
        return inv_freq
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, rope_scaling)
    raise ValueError(f"rope_scaling.rope_type {kind!r} is not supported "
                     f"(supported: null, 'default', 'llama3')")


def rope_tables(positions, head_dim: int, rope_theta: float = 10000.0,
                rope_scaling: Mapping[str, Any] | None = None,
                dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of every angle m * theta_i: two arrays of shape positions.shape + (D/2,).

    `positions` is any integer array: (T,) for one sequence, (B, T) for rows that start at
    different positions (left padding, a KV cache). The angles are float32 products as in
    HF transformers (whatever `dtype`), cos and sin are then rounded to `dtype`. To rotate x
    of shape (B, H, T, D) with (B, T) positions, pass `cos[:, None]` and `sin[:, None]`;
    for x (B, T, H, D), `cos[:, :, None]`.
    """
    positions = np.asarray(positions)
    if not np.issubdtype(positions.dtype, np.integer):
        raise TypeError(f"rope_tables: positions must be integers, got dtype {positions.dtype}")
    inv_freq = rope_inv_freq(head_dim, rope_theta, rope_scaling)
    angles = positions.astype(np.float32)[..., None] * inv_freq  # (..., D/2), float32
    angles = angles.astype(np.float64)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _pairs(x: np.ndarray, interleaved: bool) -> tuple[np.ndarray, np.ndarray]:
    """Views of the two halves of every pair: (x1, x2), each (..., D/2)."""
    if interleaved:
        return x[..., 0::2], x[..., 1::2]
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def _check(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    D = x.shape[-1] if x.ndim else 0
    if D < 2 or D % 2:
        raise ValueError(f"rope: the last axis of x must be an even head size, got shape {x.shape}")
    if cos.shape != sin.shape or cos.shape[-1:] != (D // 2,):
        raise ValueError(f"rope: cos and sin must both end in D/2 = {D // 2}, got shapes "
                         f"{cos.shape} and {sin.shape} for x of shape {x.shape}")
    try:
        fits = np.broadcast_shapes(x.shape[:-1] + (D // 2,), cos.shape) == x.shape[:-1] + (D // 2,)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"rope: cos and sin of shape {cos.shape} do not broadcast to x's pairs "
                         f"{x.shape[:-1] + (D // 2,)} (for x (B, H, T, D) and (B, T) positions, "
                         f"pass cos[:, None])")


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool = False,
               out: np.ndarray | None = None) -> np.ndarray:
    """Rotate every pair of x (..., D) by its angle; plain numpy, no graph (for inference).

    cos and sin (from `rope_tables`) broadcast to x.shape[:-1] + (D/2,). `interleaved`
    picks the pairing (see the module docstring). Written into `out` when given (not x).
    """
    x, cos, sin = np.asarray(x), np.asarray(cos), np.asarray(sin)
    _check(x, cos, sin)
    if np.issubdtype(x.dtype, np.floating):  # float32 in, float32 out
        cos, sin = cos.astype(x.dtype, copy=False), sin.astype(x.dtype, copy=False)
    if out is None:
        out = np.empty(x.shape, dtype=np.result_type(x, cos))

    def rotate(x, cos, sin, out):
        x1, x2 = _pairs(x, interleaved)
        o1, o2 = _pairs(out, interleaved)
        t = np.empty(np.broadcast_shapes(x1.shape, sin.shape), out.dtype)  # one scratch array
        np.multiply(x1, cos, out=o1)
        o1 -= np.multiply(x2, sin, out=t)  # x1' = x1 cos - x2 sin
        np.multiply(x2, cos, out=o2)
        o2 += np.multiply(x1, sin, out=t)  # x2' = x2 cos + x1 sin

    if x.ndim < 3:
        rotate(x, cos, sin, out)
        return out
    # (B, H, T, D) and the like: the first axis shared among the cores (workspace.split),
    # with the tables' first axis when they have one of their own.
    own = cos.ndim == x.ndim and cos.shape[0] == x.shape[0] > 1
    per = x[0].size

    def part(start: int, stop: int) -> None:
        a, b = start // per, stop // per
        rotate(x[a:b], cos[a:b] if own else cos, sin[a:b] if own else sin, out[a:b])

    workspace.split(x.size, part, per)
    return out


@op
def rope(x, cos, sin, interleaved=False):
    """Rotary position embedding of x (..., D) by the angles whose cos and sin are given
    (shape broadcastable to x.shape[:-1] + (D/2,), from `rope_tables`). cos and sin are
    constants: only x gets a gradient. `interleaved=False` is HF's rotate-half pairing,
    True the original/GGUF pairing."""
    cos, sin = np.asarray(cos), np.asarray(sin)
    y = apply_rope(x, cos, sin, interleaved)

    def backward(g):
        # y = R(theta) x, so dL/dx = R(theta)^T g = R(-theta) g: cos(-t) = cos t, sin(-t) = -sin t
        return apply_rope(g, cos, -sin, interleaved), None, None

    return y, backward


def _head_permutation(n_heads: int, head_dim: int) -> np.ndarray:
    """Row order that turns interleaved rows into rotate-half rows: within each head, rows
    0, 2, 4, ..., D-2 (the first halves of the pairs) and then 1, 3, ..., D-1."""
    per_head = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return (np.arange(n_heads)[:, None] * head_dim + per_head).reshape(-1)


def _permute_heads(w, n_heads: int, axis: int, inverse: bool, name: str) -> np.ndarray:
    w = np.asarray(w)
    if n_heads < 1 or w.ndim == 0 or w.shape[axis] % n_heads or (w.shape[axis] // n_heads) % 2:
        raise ValueError(f"{name}: axis {axis} of the weight (shape {w.shape}) must hold "
                         f"n_heads = {n_heads} heads of an even size")
    perm = _head_permutation(n_heads, w.shape[axis] // n_heads)
    if inverse:
        perm = np.argsort(perm)
    return np.take(w, perm, axis=axis)


def interleaved_to_rotate_half(w, n_heads: int, axis: int = 0) -> np.ndarray:
    """Permute a q or k projection (weight (n_heads * D, in) in the HF/PyTorch layout, or a
    bias (n_heads * D,)) from interleaved pairs (GGUF, Meta's original) to rotate-half pairs
    (HF). Pass the number of key-value heads for k. `axis` is the output axis (1 for a
    weight stored (in, out))."""
    return _permute_heads(w, n_heads, axis, False, "interleaved_to_rotate_half")


def rotate_half_to_interleaved(w, n_heads: int, axis: int = 0) -> np.ndarray:
    """The inverse of `interleaved_to_rotate_half`: HF rows to GGUF/original rows."""
    return _permute_heads(w, n_heads, axis, True, "rotate_half_to_interleaved")


@gradcheck_inputs("rope")
def _sample(rng: np.random.Generator):
    cos, sin = rope_tables(np.array([[0, 1, 2], [3, 4, 5]]), 4, rope_theta=10.0,
                           dtype=np.float64)
    return (lambda x: rope(x, cos[:, None], sin[:, None])), (rng.standard_normal((2, 2, 3, 4)),)

