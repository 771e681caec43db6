"""Recurrent layers: a cell applied along a sequence, stacked `num_layers` deep.

Layer k reads the outputs of layer k - 1 (layer 0 reads the input) and carries its own
state. Each layer can run in one of two ways, which give the same numbers:
- `fused=True` (the default): one op per layer from `numpylm.autograd.ops_rnn`, which runs the
  whole sequence in numpy and backpropagates through time by hand;
- `fused=False`: the readable way, the cell's step function from `numpylm.nn.rnn_cells`
  called once per time step, with autograd doing the backward pass.

Parameters, shapes and state conventions are PyTorch's, so a state dict of `torch.nn.LSTM`
(or GRU, RNN) loads as is: `weight_ih_l{k}` (G H, I or H), `weight_hh_l{k}` (G H, H),
`bias_ih_l{k}`, `bias_hh_l{k}` (G H,), with G = 1, 4 or 3, all U(-1/sqrt(H), 1/sqrt(H)).
Two differences: `batch_first` defaults to True here (x (B, T, I), output (B, T, H)), and
dropout between layers, bidirectional layers and LSTM projections are not provided.
Final states are (num_layers, B, H), whatever `batch_first` is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn.layers import get_rng
from numpylm.nn.module import Module
from numpylm.nn.rnn_cells import GATES, as_tensor, gru_step, init_uniform, lstm_step, rnn_tanh_step
from numpylm.autograd.ops_rnn import gru_fused, lstm_fused, rnn_tanh_fused

State = Any  # a Tensor (num_layers, B, H), or for the LSTM a pair (h, c) of them


class _RecurrentLayer(Module):
    kind = ""          # "rnn", "lstm" or "gru"
    n_states = 1       # the LSTM carries two: (h, c)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = True, fused: bool = True,
                 dtype: Any = np.float32, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"{name}: input_size, hidden_size and num_layers must be positive, "
                             f"got {input_size}, {hidden_size}, {num_layers}")
        rng = get_rng(rng)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.fused = bias, batch_first, fused
        rows = GATES[self.kind] * hidden_size
        # Created in PyTorch's order, so named_parameters() lists them as torch does.
        for k in range(num_layers):
            cols = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", init_uniform(rng, hidden_size, (rows, cols), dtype))
            setattr(self, f"weight_hh_l{k}",
                    init_uniform(rng, hidden_size, (rows, hidden_size), dtype))
            if bias:
                setattr(self, f"bias_ih_l{k}", init_uniform(rng, hidden_size, (rows,), dtype))
                setattr(self, f"bias_hh_l{k}", init_uniform(rng, hidden_size, (rows,), dtype))

    def layer_parameters(self, k: int) -> tuple:
        """(w_ih, w_hh, b_ih, b_hh) of layer k; the biases are None without bias."""
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}", None), getattr(self, f"bias_hh_l{k}", None))

    # ---- checking ----------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> tuple[int, int]:
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            expected = layout.replace("I", str(self.input_size))
            raise ValueError(f"{type(self).__name__}: expected input of shape {expected}, "
                             f"got {x.shape}")
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if T == 0:
            raise ValueError(f"{type(self).__name__}: the input sequence is empty "
                             f"(shape {x.shape})")
        return B, T

    def _initial_state(self, state: State, B: int, dtype: Any) -> list[Tensor]:
        """The state as a list of n_states Tensors (num_layers, B, H); zeros if None."""
        name = type(self).__name__
        expected = (self.num_layers, B, self.hidden_size)
        if state is None:
            return [Tensor(np.zeros(expected, dtype=dtype)) for _ in range(self.n_states)]
        if self.n_states == 2:
            if not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise ValueError(f"{name}: the state must be a pair (h, c), each of shape "
                                 f"{expected}")
            parts = list(state)
        else:
            parts = [state]
        parts = [as_tensor(s, dtype) for s in parts]
        for s in parts:
            if s.shape != expected:
                raise ValueError(f"{name}: expected a state of shape {expected} "
                                 f"(num_layers, B, H), got {s.shape}")
        return parts

    # ---- forward -----------------------------------------------------------------------
    def forward(self, x: Any, state: State = None) -> tuple[Tensor, State]:
        """x (B, T, I) (or (T, B, I) without batch_first) -> (output, final state).

        output holds the last layer's hidden state at every step, (B, T, H); the final state
        is (num_layers, B, H), for the LSTM a pair (h_n, c_n).
        """
        x = as_tensor(x, self.weight_ih_l0.dtype)
        B, T = self._check_input(x)
        states = self._initial_state(state, B, self.weight_hh_l0.dtype)
        seq = F.transpose(x, axes=(1, 0, 2)) if self.batch_first else x   # (T, B, I)
        finals: list[list[Tensor]] = [[] for _ in range(self.n_states)]
        for k in range(self.num_layers):
            layer_state = [s[k] for s in states]                         # each (B, H)
            run = self._fused_layer if self.fused else self._unrolled_layer
            seq, last = run(seq, layer_state, self.layer_parameters(k))
            for store, s in zip(finals, last):
                store.append(s)
        output = F.transpose(seq, axes=(1, 0, 2)) if self.batch_first else seq
        final = [F.stack(store, axis=0) for store in finals]             # (num_layers, B, H)
        return output, (tuple(final) if self.n_states == 2 else final[0])

    def _fused_layer(self, seq: Tensor, state: list[Tensor], params: tuple):
        """One layer as one op: seq (T, B, in) -> ((T, B, H), [final state (B, H), ...])."""
        T = seq.shape[0]
        if self.kind == "lstm":
            out = lstm_fused(seq, state[0], state[1], *params)   # (T + 1, B, H): h's, then c_T
            return out[:T], [out[T - 1], out[T]]
        fused = rnn_tanh_fused if self.kind == "rnn" else gru_fused
        out = fused(seq, state[0], *params)                      # (T, B, H)
        return out, [out[T - 1]]

    def _unrolled_layer(self, seq: Tensor, state: list[Tensor], params: tuple):
        """One layer as its cell applied T times, each step a handful of autograd ops."""
        outputs = []
        for t in range(seq.shape[0]):
            x_t = seq[t]                                          # (B, in)
            if self.kind == "lstm":
                state = list(lstm_step(x_t, state[0], state[1], *params))
            elif self.kind == "gru":
                state = [gru_step(x_t, state[0], *params)]
            else:
                state = [rnn_tanh_step(x_t, state[0], *params)]
            outputs.append(state[0])
        return F.stack(outputs, axis=0), state                   # (T, B, H)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, fused={self.fused}")


class RNN(_RecurrentLayer):
    """A stack of tanh RNN layers: forward(x, h0=None) -> (output, h_n)."""

    kind = "rnn"


class LSTM(_RecurrentLayer):
    """A stack of LSTM layers: forward(x, (h0, c0)=None) -> (output, (h_n, c_n))."""

    kind = "lstm"
    n_states = 2


class GRU(_RecurrentLayer):
    """A stack of GRU layers: forward(x, h0=None) -> (output, h_n)."""

    kind = "gru"
