"""Fused neural-network ops: softmax, log-softmax, cross-entropy, layer norm, RMS norm, SiLU,
SwiGLU and dropout, each a single op with a backward derived by hand.

Their readable twins, built from primitive ops, are in `numpylm.autograd.composed`; read
those first. The fused versions exist for two reasons, named at each op: numerical stability
(softmax of large logits) and speed (one pass instead of a chain of temporaries, and one
graph node instead of eight). Property tests show each fused op equals its composed twin
in value and gradient.
"""
from __future__ import annotations

import numpy as np

from numpylm.autograd import workspace
from numpylm.autograd.gradcheck_inputs import gradcheck_inputs
from numpylm.autograd.op import op

# Elements per piece of the fused element-wise ops: 512 KB of float32, so that the few arrays
# one piece touches stay in the cache from its first pass to its last, while each numpy call
# is long enough that two threads rarely wait for each other at the interpreter lock.
PIECE = 1 << 17
# Elements per piece of the row-wise ops (RMS norm). Larger: a piece's passes include some on
# one number per row (the mean square, its root), and at 128 KB pieces (85 rows of 384) these
# tiny calls held the interpreter lock so often that two threads took 2.2x as long as one
# (4,096 rows of 384: 9.5 against 4.4 ms forward and backward, from 2 to 3 pieces per thread).
ROW_PIECE = 1 << 19


@op
def softmax(x, axis=-1):
    # Subtracting the max leaves softmax unchanged and keeps exp from overflowing.
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    y = e / np.sum(e, axis=axis, keepdims=True)
    def backward(g):
        # dy_i/dx_j = y_i (delta_ij - y_j)  =>  dL/dx = y * (g - sum_i g_i y_i)
        return (y * (g - np.sum(g * y, axis=axis, keepdims=True)),)
    return y, backward


@op
def log_softmax(x, axis=-1):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    y = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    def backward(g):
        # y_i = x_i - logsumexp(x)  =>  dL/dx = g - softmax(x) * sum_i g_i
        return (g - np.exp(y) * np.sum(g, axis=axis, keepdims=True),)
    return y, backward


def _check_targets(logits: np.ndarray, targets: np.ndarray) -> None:
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype "
                        f"{targets.dtype}")
    if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of "
                         f"shape {logits.shape[:-1]}, got targets of shape {targets.shape}")


@op
def cross_entropy(logits, targets, ignore_index=None):
    """Mean of -log softmax(logits)[target] over every target not equal to `ignore_index`.

    logits (..., V), targets (...) integer class ids. Fused because the composed version
    builds a (..., V) one-hot or gathers through log_softmax, with several full-size
    temporaries; here the only full-size array is the softmax itself.
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    _check_targets(logits, targets)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    t = targets.reshape(-1)
    keep = np.ones(t.shape, dtype=bool) if ignore_index is None else (t != ignore_index)
    t_kept = np.where(keep, t, 0)
    if keep.any() and (t_kept.min() < 0 or t_kept.max() >= V):
        bad = t_kept[(t_kept < 0) | (t_kept >= V)][0]
        raise ValueError(f"cross_entropy: target {bad} is outside [0, {V})")
    n = int(keep.sum())  # no counted targets gives nan (0/0), as in PyTorch
    rows = np.arange(flat.shape[0])
    m = flat.max(axis=1, keepdims=True)
    e = np.exp(flat - m)
    s = e.sum(axis=1, keepdims=True)
    # -log softmax(x)_t = log sum_j exp(x_j - m) - (x_t - m)
    nll = (np.log(s[:, 0]) - (flat[rows, t_kept] - m[:, 0])) * keep
    loss = np.asarray(nll.sum() / n if n else np.nan, dtype=logits.dtype)

    def backward(g):
        # dL/dx = (softmax(x) - onehot(t)) / n for each counted row, 0 for ignored rows
        grad = e / s
        grad[rows, t_kept] -= 1.0
        grad *= (g / n) * keep[:, None]
        return grad.reshape(logits.shape), None

    return loss, backward


@op
def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise the last axis to zero mean and unit variance, then scale and shift.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (as
    PyTorch and GPT-2). `weight` and `bias` may be None. Fused because the composed
    version keeps about ten full-size intermediates alive for the backward pass; here
    there are two, updated in place, and the row sums are einsum dot products (no
    full-size product array).
    """
    x = np.asarray(x)
    C = x.shape[-1]
    xhat = x - x.mean(axis=-1, keepdims=True)  # x - mu, normalised in place below
    var = np.einsum("...c,...c->...", xhat, xhat)[..., None] / C
    rstd = 1.0 / np.sqrt(var + eps)
    xhat *= rstd
    y = xhat if weight is None else xhat * weight
    if bias is not None:
        y = y + bias if y is xhat else np.add(y, bias, out=y)

    def backward(g):
        # With xhat = (x - mu) * rstd and dxhat = g * weight, over the N normalised entries:
        # dL/dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        dxhat = g if weight is None else g * weight
        mean_dxhat = dxhat.mean(axis=-1, keepdims=True)
        mean_dxhat_xhat = np.einsum("...c,...c->...", dxhat, xhat)[..., None] / C
        dx = xhat * mean_dxhat_xhat
        np.subtract(dxhat, dx, out=dx)
        dx -= mean_dxhat
        dx *= rstd
        dweight = None if weight is None else (lambda: _sum_rows_of_product(g, xhat, weight))
        dbias = None if bias is None else g
        return dx, dweight, dbias

    return y, backward


def _sum_rows_of_product(g: np.ndarray, xhat: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """g * xhat summed down to a (C,) weight's shape, without the full-size product."""
    if np.ndim(weight) == 1 and g.shape == xhat.shape:
        return np.einsum("nc,nc->c", g.reshape(-1, g.shape[-1]), xhat.reshape(-1, g.shape[-1]))
    return g * xhat  # another weight shape: @op sums the broadcast axes


@op
def rms_norm(x, weight, eps=1e-6):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis (Zhang & Sennrich 2019).

    The definition of HF's LlamaRMSNorm (x * rsqrt(mean(x^2) + eps) * weight): layer norm
    without the mean subtraction and without a bias. `weight` may be None. Fused for the same
    reasons as `layer_norm`: the mean square and the row sums of the backward are einsum dot
    products, and the only full-size arrays kept are x-hat and the output. The rows go in
    pieces that stay in cache through every pass, shared among the cores (`workspace.split`).
    """
    x = np.asarray(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    rstd = np.empty((x2.shape[0], 1), dtype)
    xhat = workspace.empty(x2.shape, dtype)
    y = xhat if weight is None else workspace.empty(x2.shape, np.result_type(xhat, weight))
    rows = max(1, ROW_PIECE // C)

    def forward_part(start: int, stop: int) -> None:
        for a in range(start // C, stop // C, rows):
            b = min(a + rows, stop // C)
            xr, r = x2[a:b], rstd[a:b]
            np.divide(np.einsum("nc,nc->n", xr, xr)[:, None], C, out=r)
            r += eps
            np.sqrt(r, out=r)
            np.divide(1.0, r, out=r)
            np.multiply(xr, r, out=xhat[a:b])
            if weight is not None:
                np.multiply(xhat[a:b], weight, out=y[a:b])

    workspace.split(x2.size, forward_part, C)

    def backward(g):
        # As layer norm without the mean: dL/dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
        g2 = np.asarray(g).reshape(-1, C)
        dx = workspace.empty(x2.shape, np.result_type(g2, xhat))

        def backward_part(start: int, stop: int) -> None:
            for a in range(start // C, stop // C, rows):
                b = min(a + rows, stop // C)
                dxhat = g2[a:b] if weight is None else g2[a:b] * weight
                xh, d = xhat[a:b], dx[a:b]
                mean_dxhat_xhat = np.einsum("nc,nc->n", dxhat, xh)[:, None] / C
                np.multiply(xh, mean_dxhat_xhat, out=d)
                np.subtract(dxhat, d, out=d)
                d *= rstd[a:b]

        workspace.split(x2.size, backward_part, C)
        dweight = None if weight is None else (
            lambda: _sum_rows_of_product(g, xhat.reshape(x.shape), weight))
        return dx.reshape(x.shape), dweight

    return y.reshape(x.shape), backward


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """sigma(x) = 1 / (1 + e^-x) = (1 + tanh(x/2)) / 2, in one new array: the tanh form
    never overflows (e^-x does for x < -88 in float32)."""
    s = np.multiply(x, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


@op
def silu(x):
    """silu(x) = x * sigmoid(x) (also called swish), the activation of Llama's MLP."""
    x = np.asarray(x)
    s = _sigmoid(x)

    def backward(g):
        # d/dx x s(x) = s + x s (1 - s) = s (1 + x (1 - s))
        d = np.subtract(1.0, s)
        d *= x
        d += 1.0
        d *= s
        d *= g
        return (d,)

    return x * s, backward


@op
def swiglu(gate, up):
    """silu(gate) * up, the gated MLP of Llama (Shazeer 2020): down(swiglu(gate(x), up(x))).

    gate and up have the same shape (..., I). Fused because the composed version makes four
    full-size arrays forward (sigmoid, silu, product, and the tanh inside sigmoid) and more
    backward, each pass reading and writing memory. Here each piece of `PIECE` elements
    goes through all its passes while it is in cache, the pieces are shared among the cores
    (`workspace.split`), the only full-size arrays are the sigmoid (kept for backward), the
    output and the two gradients, and those come from the workspace (no fresh pages each
    step). Both gradients are made in one sweep.
    """
    gate, up = np.asarray(gate), np.asarray(up)
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate and up must have the same shape, got {gate.shape} "
                         f"and {up.shape}")
    dtype = np.result_type(gate, up)
    g1, u1 = gate.reshape(-1), up.reshape(-1)  # views when contiguous (Linear's outputs are)
    s = workspace.empty(g1.shape, dtype)
    y = workspace.empty(g1.shape, dtype)

    @np.errstate(over="ignore")  # in each thread: the error state is the thread's own
    def forward_part(start: int, stop: int) -> None:
        for a in range(start, stop, PIECE):
            b = min(a + PIECE, stop)
            gp, sp, yp = g1[a:b], s[a:b], y[a:b]
            np.negative(gp, out=sp)  # sigma(x) = 1 / (1 + e^-x): exp is twice as fast as
            np.exp(sp, out=sp)  # tanh here; e^-x = inf (x < -88 in float32) gives
            sp += 1.0  # 1 / inf = 0, sigma's limit
            np.reciprocal(sp, out=sp)
            np.multiply(gp, sp, out=yp)
            yp *= u1[a:b]

    workspace.split(g1.size, forward_part, PIECE)
    grads: list[np.ndarray] = []

    def both(g):
        # d/dgate silu(gate) up = up s (1 + gate (1 - s));  d/dup silu(gate) up = gate s
        g = np.asarray(g, dtype=dtype).reshape(-1)
        dg = workspace.empty(g1.shape, dtype)
        du = workspace.empty(g1.shape, dtype)

        def backward_part(start: int, stop: int) -> None:
            for a in range(start, stop, PIECE):
                b = min(a + PIECE, stop)
                gp, sp, gr, d, e = g1[a:b], s[a:b], g[a:b], dg[a:b], du[a:b]
                np.subtract(1.0, sp, out=d)
                d *= gp
                d += 1.0
                d *= sp
                d *= u1[a:b]
                d *= gr
                np.multiply(gp, sp, out=e)
                e *= gr

        workspace.split(g1.size, backward_part, PIECE)
        grads[:] = [dg.reshape(gate.shape), du.reshape(gate.shape)]

    def backward(g):
        def gradient(i):
            def make():
                if not grads:
                    both(g)
                return grads[i]
            return make
        return gradient(0), gradient(1)

    return y.reshape(gate.shape), backward


@op
def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability p and scale the survivors by 1/(1-p), so the
    expected value is unchanged (inverted dropout). Identity when not training or p == 0.
    `rng` is a `numpy.random.Generator`; pass one for reproducible masks."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x, lambda g: (g,)
    rng = rng if rng is not None else np.random.default_rng()
    scale = (rng.random(np.shape(x)) >= p) / (1.0 - p)
    scale = scale.astype(np.result_type(x, np.float32))
    def backward(g):  # d/dx (x * scale) = scale
        return (g * scale,)
    return x * scale, backward


# Gradcheck inputs of the Llama family's ops (the older ones are in op_inputs.py).
gradcheck_inputs("silu")(lambda rng: (silu, (rng.standard_normal((3, 4)) * 3,)))
gradcheck_inputs("swiglu")(lambda rng: (swiglu, (rng.standard_normal((2, 3, 4)) * 3,
                                                 rng.standard_normal((2, 3, 4)))))
