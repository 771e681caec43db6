"""Recurrent cells: one time step of a tanh RNN, an LSTM and a GRU, written with autograd ops.

A recurrent network reads a sequence one step at a time and carries a state from each step
to the next. The cell is the rule for one step; a layer (`numpylm.nn.rnn`) applies it along
the sequence. These are the readable versions: each step function below is the equation
from the paper, and autograd derives its gradient. The fused layer ops in
`numpylm.autograd.ops_rnn` compute the same numbers with backpropagation through time written
out by hand, and the tests show the two agree.

The equations, gate order and parameter names are PyTorch's, so weights interchange
(x (B, I) the input, h (B, H) the previous hidden state, rows of the weights stacked by gate):

    tanh RNN (Elman 1990):
        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000),
    gates stacked i, f, g, o in weight_ih (4H, I) and weight_hh (4H, H):
        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)         candidate cell
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g
        h' = o * tanh(c')
    GRU (Cho et al. 2014), gates stacked r, z, n in weight_ih (3H, I) and weight_hh (3H, H):
        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate; r scales W_hn h + b_hn
        h' = (1 - z) * n + z * h

Every parameter starts as U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn.layers import affine, get_rng, init_uniform
from numpylm.nn.module import Module

# Rows of weight_ih / weight_hh per unit of hidden size: one block of H rows per gate.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rnn_tanh_step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> Tensor:
    """One step of the tanh RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    return F.tanh(affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh))


def lstm_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step: returns (h', c'). Gates i, f, g, o are consecutive blocks of H columns."""
    pre = affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = F.split(pre, 4, axis=1)            # each (B, H)
    i, f, g, o = F.sigmoid(a_i), F.sigmoid(a_f), F.tanh(a_g), F.sigmoid(a_o)
    c_next = f * c + i * g       # forget part of the old memory, write part of the new
    h_next = o * F.tanh(c_next)  # show part of the memory
    return h_next, c_next


def gru_step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
             b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> Tensor:
    """One GRU step. Gates r, z, n are consecutive blocks of H columns.

    subtle: the input and hidden projections are kept apart, because the reset gate
    multiplies only the hidden part of the candidate, W_hn h + b_hn (bias included).
    """
    xr, xz, xn = F.split(affine(x, w_ih, b_ih), 3, axis=1)  # each (B, H)
    hr, hz, hn = F.split(affine(h, w_hh, b_hh), 3, axis=1)  # each (B, H)
    r = F.sigmoid(xr + hr)
    z = F.sigmoid(xz + hz)
    n = F.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h  # z near 1 keeps the old state, near 0 takes the new one


def as_tensor(x: Any, dtype: Any) -> Tensor:
    """A Tensor as is; an array or list as a constant Tensor of `dtype`."""
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=dtype))


class _Cell(Module):
    """Parameters weight_ih (G H, I), weight_hh (G H, H), bias_ih, bias_hh (G H,)."""

    kind = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = np.float32, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}: input_size and hidden_size must be "
                             f"positive, got {input_size} and {hidden_size}")
        rng = get_rng(rng)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = GATES[self.kind] * hidden_size
        self.weight_ih = init_uniform(rng, hidden_size, (rows, input_size), dtype)
        self.weight_hh = init_uniform(rng, hidden_size, (rows, hidden_size), dtype)
        self.bias_ih = init_uniform(rng, hidden_size, (rows,), dtype) if bias else None
        self.bias_hh = init_uniform(rng, hidden_size, (rows,), dtype) if bias else None

    def _check(self, x: Tensor, states: tuple) -> tuple[Tensor, ...]:
        """Check x (B, I); return the states as Tensors, zeros (B, H) where None."""
        name = type(self).__name__
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (B, {self.input_size}), "
                             f"got {x.shape}")
        expected = (x.shape[0], self.hidden_size)
        out = []
        for s in states:
            if s is None:
                out.append(Tensor(np.zeros(expected, dtype=self.weight_hh.dtype)))
                continue
            s = as_tensor(s, self.weight_hh.dtype)
            if s.shape != expected:
                raise ValueError(f"{name}: expected a state of shape {expected}, "
                                 f"got {s.shape}")
            out.append(s)
        return tuple(out)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(_Cell):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh); forward(x (B, I), h (B, H) or None) -> h'."""

    kind = "rnn"

    def forward(self, x: Any, h: Any = None) -> Tensor:
        x = as_tensor(x, self.weight_ih.dtype)
        (h,) = self._check(x, (h,))
        return rnn_tanh_step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTMCell(_Cell):
    """One LSTM step; forward(x (B, I), (h, c) or None) -> (h', c'), each (B, H)."""

    kind = "lstm"

    def forward(self, x: Any, state: tuple[Any, Any] | None = None) -> tuple[Tensor, Tensor]:
        x = as_tensor(x, self.weight_ih.dtype)
        if state is not None and not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ValueError("LSTMCell: the state must be a pair (h, c)")
        h, c = self._check(x, (None, None) if state is None else tuple(state))
        return lstm_step(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_Cell):
    """One GRU step; forward(x (B, I), h (B, H) or None) -> h'."""

    kind = "gru"

    def forward(self, x: Any, h: Any = None) -> Tensor:
        x = as_tensor(x, self.weight_ih.dtype)
        (h,) = self._check(x, (h,))
        return gru_step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
