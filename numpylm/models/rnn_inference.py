"""The recurrent language model's decoding step in plain numpy: the arithmetic of the fused layer
ops (`numpylm.autograd.ops_rnn`) without the autograd graph (part 3 of the guide).

Decoding feeds one token at a time. Through the graph, each token pays for what a training
sequence amortises over its T steps: the ops' shape checks, Tensor wrapping, scratch arrays
taken from the workspace, a transposed copy of W_hh, stacking the final states. For a small
model that bookkeeping is most of the step (a 1-layer GRU of width 128: 0.30 ms a token through
`forward_with_state`, against 0.04 ms here). This twin runs the same equations
(`numpylm.nn.rnn_cells` has them as written in the papers), in the fused ops' order: the input
side x W_ih^T + b_ih for all the new tokens at once, then per token the hidden side
h W_hh^T + b_hh and the gates, with sigmoid as (1 + tanh(a / 2)) / 2. It is the stepper behind
`RNNLM.step`; the tests prove it gives `RNNLM.forward`'s logits and final state.
"""
from __future__ import annotations

import numpy as np

from numpylm.autograd.tensor import Tensor


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """sigmoid(a) = (1 + tanh(a / 2)) / 2 in place, the fused ops' form (it never overflows)."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


def _projection(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x W^T + b for rows x (N, in), W (out, in) as PyTorch stores it."""
    y = x @ w.T
    if b is not None:
        y += b
    return y


def _layer(kind: str, xs: np.ndarray, states: list[np.ndarray], params) -> np.ndarray:
    """One layer over the new tokens: xs (T, B, in) -> (T, B, H). The list `states` ([h] or
    [h, c], each (B, H)) ends holding the last token's, in new arrays (the old ones are read,
    never written, so a snapshot of the state that shares them stays valid)."""
    w_ih, w_hh, b_ih, b_hh = (None if p is None else p.data for p in params)
    T, B = xs.shape[:2]
    H = w_hh.shape[1]
    xp = _projection(xs.reshape(T * B, -1), w_ih, b_ih).reshape(T, B, -1)  # input side
    out = np.empty((T, B, H), dtype=xp.dtype)
    h = states[0]
    for t in range(T):
        p = _projection(h, w_hh, b_hh)  # hidden side, (B, G H)
        if kind == "rnn":
            p += xp[t]
            h = np.tanh(p, out=p)  # h = tanh(W_ih x + b_ih + W_hh h + b_hh)
        elif kind == "gru":
            a = _sigmoid_(np.add(xp[t, :, :2 * H], p[:, :2 * H]))  # [r, z]
            r, z = a[:, :H], a[:, H:]
            n = np.multiply(r, p[:, 2 * H:])
            n += xp[t, :, 2 * H:]
            np.tanh(n, out=n)  # n = tanh(xn + r (W_hn h + b_hn))
            h = np.subtract(h, n)
            h *= z
            h += n  # h = (1 - z) n + z h
        else:  # lstm: gates i, f, g, o
            p += xp[t]
            i, f, o = (_sigmoid_(p[:, k * H:(k + 1) * H]) for k in (0, 1, 3))
            g = np.tanh(p[:, 2 * H:3 * H])
            c = np.multiply(f, states[1])
            c += i * g  # c = f c + i g
            states[1] = c
            h = np.multiply(o, np.tanh(c))  # h = o tanh(c)
        out[t] = h
    states[0] = h
    return out


def forward_logits(model, ids: np.ndarray, hidden) -> tuple[np.ndarray, object]:
    """(logits (B, T, V) after each of ids (B, T), the new hidden state), from `hidden` (the
    model's state: a Tensor (num_layers, B, H), for the LSTM a pair (h, c); None is zeros).
    The new state has the same form, in new arrays (the old one is not changed)."""
    rnn = model.rnn
    B, T = ids.shape
    kind, L, H = rnn.kind, rnn.num_layers, rnn.hidden_size
    dtype = rnn.weight_hh_l0.dtype
    parts = [hidden] if kind != "lstm" or hidden is None else list(hidden)
    if hidden is None:
        parts = [None] * rnn.n_states
    start = [np.zeros((L, B, H), dtype) if s is None else np.asarray(
        s.data if isinstance(s, Tensor) else s) for s in parts]
    seq = model.embedding.weight.data[ids].transpose(1, 0, 2)  # (T, B, C), time-major
    finals: list[list[np.ndarray]] = [[] for _ in range(rnn.n_states)]
    for k in range(L):
        states = [s[k] for s in start]
        seq = _layer(kind, seq, states, rnn.layer_parameters(k))
        for store, s in zip(finals, states):
            store.append(s)
    head = model.head
    logits = _projection(seq.transpose(1, 0, 2).reshape(B * T, H), head.weight.data,
                         None if head.bias is None else head.bias.data)
    new = [Tensor(store[0][None] if L == 1 else np.stack(store)) for store in finals]
    return logits.reshape(B, T, -1), (tuple(new) if kind == "lstm" else new[0])
