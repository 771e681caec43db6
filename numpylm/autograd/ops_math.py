"""Elementwise arithmetic, activation functions and matrix multiplication, each with its
gradient written next to it.

Every rule receives the upstream gradient `g` = dL/dy and returns dL/dx for each positional
input by the chain rule, dL/dx = dL/dy * dy/dx. Inputs may broadcast against each other: the
rules return gradients of the broadcast shape and `@op` sums them back (see `unbroadcast`).
"""
from __future__ import annotations

import math

import numpy as np

from numpylm.autograd.op import op, unbroadcast


def _check_broadcast(name: str, a, b) -> None:
    try:
        np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        raise ValueError(f"{name}: shapes {np.shape(a)} and {np.shape(b)} "
                         f"do not broadcast together") from None


@op
def add(a, b):
    _check_broadcast("add", a, b)
    def backward(g):  # d(a+b)/da = 1, d(a+b)/db = 1
        return g, g
    return a + b, backward


@op
def sub(a, b):
    _check_broadcast("sub", a, b)
    def backward(g):  # d(a-b)/da = 1, d(a-b)/db = -1
        return g, lambda: -g
    return a - b, backward


@op
def mul(a, b):
    _check_broadcast("mul", a, b)
    def backward(g):  # d(ab)/da = b, d(ab)/db = a
        return (lambda: g * b), (lambda: g * a)
    return a * b, backward


@op
def div(a, b):
    _check_broadcast("div", a, b)
    y = a / b
    def backward(g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b
        return (lambda: g / b), (lambda: -g * y / b)
    return y, backward


@op
def neg(x):
    def backward(g):  # d(-x)/dx = -1
        return (-g,)
    return -x, backward


@op
def pow(x, exponent):
    if not np.isscalar(exponent):
        raise TypeError(f"pow: the exponent must be a scalar, got {type(exponent).__name__}")
    y = x ** exponent
    def backward(g):  # d/dx x^p = p x^(p-1)
        return g * exponent * x ** (exponent - 1), None
    return y, backward


@op
def exp(x):
    y = np.exp(x)
    def backward(g):  # d/dx e^x = e^x
        return (g * y,)
    return y, backward


@op
def log(x):
    def backward(g):  # d/dx ln x = 1/x
        return (g / x,)
    return np.log(x), backward


@op
def sqrt(x):
    y = np.sqrt(x)
    def backward(g):  # d/dx sqrt(x) = 1 / (2 sqrt(x))
        return (g * 0.5 / y,)
    return y, backward


@op
def tanh(x):
    y = np.tanh(x)
    def backward(g):  # d/dx tanh(x) = 1 - tanh(x)^2
        return (g * (1.0 - y * y),)
    return y, backward


@op
def sigmoid(x):
    # sigma(x) = 1 / (1 + e^-x) = (1 + tanh(x/2)) / 2; the tanh form never overflows.
    y = 0.5 * (1.0 + np.tanh(0.5 * x))
    def backward(g):  # d/dx sigma(x) = sigma(x) (1 - sigma(x))
        return (g * y * (1.0 - y),)
    return y, backward


@op
def relu(x):
    def backward(g):  # d/dx max(x, 0) = 1 if x > 0 else 0 (we take 0 at the kink x = 0)
        return (g * (x > 0),)
    return np.maximum(x, 0), backward


_GELU_C = math.sqrt(2.0 / math.pi)


# Elements per chunk of the GELU loops: a few hundred KB, so that the chain of in-place
# passes over a chunk stays in the CPU cache instead of streaming the array from memory.
_GELU_CHUNK = 65536


@op
def gelu(x):
    # GPT-2's tanh approximation: gelu(x) = x/2 (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi).
    # Computed chunk by chunk with in-place updates: on large activations a chain of
    # full-size temporaries costs a trip through memory (and page faults) per step, and
    # this runs on every MLP of every step. (x * x * x, never x ** 3: numpy's float32 power
    # is far slower than two multiplies.)
    x = np.asarray(x)
    dtype = np.result_type(x.dtype, 0.5)  # float stays as it is; integers become float64
    xf = x.reshape(-1)
    t = np.empty(x.shape, dtype=dtype)  # tanh(c (x + 0.044715 x^3)), kept for the backward
    y = np.empty(x.shape, dtype=dtype)
    for s in range(0, xf.size, _GELU_CHUNK):
        xs, ts, ys = xf[s:s + _GELU_CHUNK], t.reshape(-1)[s:s + _GELU_CHUNK], \
            y.reshape(-1)[s:s + _GELU_CHUNK]
        np.multiply(xs, xs, out=ts)
        ts *= 0.044715 * _GELU_C
        ts += _GELU_C
        ts *= xs
        np.tanh(ts, out=ts)
        np.add(ts, 1.0, out=ys)
        ys *= xs
        ys *= 0.5

    def backward(g):
        # d/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2)
        g = np.broadcast_to(g, x.shape).reshape(-1)
        tf = t.reshape(-1)
        grad = np.empty(x.shape, dtype=np.result_type(dtype, g.dtype))
        gf = grad.reshape(-1)
        u = np.empty(min(_GELU_CHUNK, xf.size), dtype=dtype)
        for s in range(0, xf.size, _GELU_CHUNK):
            xs, ts, d = xf[s:s + _GELU_CHUNK], tf[s:s + _GELU_CHUNK], gf[s:s + _GELU_CHUNK]
            us = u[:len(xs)]
            np.multiply(xs, xs, out=d)
            d *= 3 * 0.044715 * _GELU_C
            d += _GELU_C
            d *= xs
            np.multiply(ts, ts, out=us)
            np.subtract(1.0, us, out=us)
            d *= us  # x c (1 + 3 * 0.044715 x^2) (1 - t^2)
            d += ts
            d += 1.0
            d *= 0.5
            d *= g[s:s + _GELU_CHUNK]
        return (grad,)

    return y, backward


@op
def matmul(a, b):
    """Matrix product with numpy's rules: 1-D operands are promoted to a row (a) or a
    column (b) and the added axis removed again; leading axes are batch axes that broadcast."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one axis, got shapes "
                         f"{a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a2.shape[-1]} != {b2.shape[-2]})")
    try:
        np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch axes of shapes {a.shape} and {b.shape} "
                         f"do not broadcast together") from None
    # (B, T, K) @ (K, N): numpy would run B small products; stacking the rows makes it one
    # large product, (B*T, K) @ (K, N), which is several times faster.
    shared_weight = b2.ndim == 2 and a2.ndim > 2
    y = (a2.reshape(-1, a2.shape[-1]) @ b).reshape(*a2.shape[:-1], -1) if shared_weight else a @ b

    def backward(g):
        # For Y = A B: dL/dA = dL/dY B^T and dL/dB = A^T dL/dY (per batch element).
        # Work with the promoted 2-D+ shapes: put back the axes that 1-D operands dropped.
        g2 = np.reshape(g, np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
                        + (a2.shape[-2], b2.shape[-1]))
        def grad_a():
            if shared_weight:
                return (g2.reshape(-1, b2.shape[-1]) @ b2.T).reshape(a.shape)
            ga = g2 @ np.swapaxes(b2, -1, -2)
            return unbroadcast(ga, a2.shape).reshape(a.shape)
        def grad_b():
            if b2.ndim == 2:
                # A shared weight (x of shape (B, T, C) @ W): summing B per-batch products
                # A_b^T G_b is one product of the stacked rows, (B*T, C)^T (B*T, N).
                k, n = b2.shape
                rows_a, rows_g = a2.reshape(-1, k), g2.reshape(-1, n)
                if b2.flags.f_contiguous and not b2.flags.c_contiguous:
                    # b is a transposed view (Linear's W^T): compute (G^T A)^T so that the
                    # gradient reaching W itself is contiguous, with no copy on the way.
                    gb = (rows_g.T @ rows_a).T
                else:
                    gb = rows_a.T @ rows_g
            else:
                gb = np.swapaxes(a2, -1, -2) @ g2
            return unbroadcast(gb, b2.shape).reshape(b.shape)
        return grad_a, grad_b

    return y, backward
