"""GPT-2's linear map as one fused op: y = x @ W + b with the weight stored (in, out).

GPT-2 calls its linear layers `Conv1D` (a convolution of width one, which is a linear map
applied at every position); PyTorch's `Linear` stores the same weight transposed, (out, in).
"""
from __future__ import annotations

import numpy as np

from numpylm.autograd.gradcheck_inputs import gradcheck_inputs
from numpylm.autograd.op import op


@op
def conv1d(x, weight, bias=None):
    """GPT-2's linear map y = x @ W + b: x (..., in), W (in, out), b (out,) -> (..., out).

    Fused for speed: (B, T) are folded into one axis so that the forward and both gradients
    are each one 2-D GEMM (numpy runs a stacked (B, T, C) @ (C, N) as B separate, slower
    products), and the bias is added in place instead of through a second full-size array.
    """
    x, weight = np.asarray(x), np.asarray(weight)
    n_in, n_out = weight.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"conv1d: expected input (..., {n_in}), got {x.shape}")
    x2 = x.reshape(-1, n_in)  # (N, in) with N = B * T
    y = x2 @ weight
    if bias is not None:
        y += bias

    def backward(g):
        g2 = g.reshape(-1, n_out)
        dx = lambda: (g2 @ weight.T).reshape(x.shape)  # dL/dx = g W^T
        dw = lambda: x2.T @ g2  # dL/dW = x^T g, summed over all N rows in one product
        db = None if bias is None else (lambda: g2.sum(axis=0))  # dL/db = sum of g's rows
        return dx, dw, db

    return y.reshape(*x.shape[:-1], n_out), backward


@gradcheck_inputs("conv1d")
def _conv1d_inputs(rng: np.random.Generator):
    return conv1d, (rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)),
                    rng.standard_normal(5))
