"""The neural n-gram of Bengio et al. (2003): embed the previous tokens, concatenate, one tanh
hidden layer, softmax over the vocabulary.

    x = [C(w_t), C(w_{t-1}), ..., C(w_{t-n+2})]     (n-1 = `context` embeddings of n_embd each)
    h = tanh(x W1^T + b1)                            (n_hidden units)
    P(w_{t+1} | w_t .. w_{t-n+2}) = softmax(h W2^T + b2)

Unlike a count n-gram, similar contexts share statistical strength through the embeddings C,
and the parameter count grows linearly, not exponentially, with the context. As in makemore
(and unlike the paper) there are no direct input-to-output connections.

Position t of idx (B, T) sees the `context` tokens ending at idx[t] and predicts the token
after it. Positions before the start of the row are filled with `pad_id`; by default that is
an extra id V with its own learned embedding (makemore's <BLANK>), or a given id such as '.'
(the makemore lecture pads names with '.', which is also their start token). The embeddings
are concatenated most recent first, and the parameters are named `wte`, `mlp.0`, `mlp.2`, as
in makemore's MLP, so state dicts interchange with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import numpylm.functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.models.decoding import WindowState
from numpylm.nn import Embedding, Linear, Module, Sequential


@dataclass
class MLPConfig:
    vocab_size: int  # V: number of token ids the model reads and predicts
    context: int = 3  # how many previous tokens each prediction sees (the n-1 of an n-gram)
    n_embd: int = 10  # size of each token's embedding
    n_hidden: int = 200  # tanh hidden units
    pad_id: int | None = None  # fills positions before the start; None = an extra learned id V


class Tanh(Module):
    """tanh as a layer, so the MLP reads as a Sequential (and keeps makemore's names)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class MLPLM(Module):
    """Bengio et al. (2003) neural probabilistic language model; see the module docstring."""

    def __init__(
        self,
        vocab_size: int,
        context: int = 3,
        n_embd: int = 10,
        n_hidden: int = 200,
        pad_id: int | None = None,
        dtype: Any = np.float32,
        rng: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("context", context), ("n_embd", n_embd),
                            ("n_hidden", n_hidden)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"MLPLM: {name} must be an integer >= 1, got {value!r}")
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"MLPLM: pad_id must be None or an id in [0, {vocab_size}), got {pad_id!r}")
        self.config = MLPConfig(int(vocab_size), int(context), int(n_embd), int(n_hidden), pad_id)
        self.vocab_size = int(vocab_size)
        self.block_size = None  # forward reads any length; each position sees `context` ids
        self.pad_id = self.vocab_size if pad_id is None else int(pad_id)
        rng = np.random.default_rng(rng)  # a Generator passes through as it is
        n_rows = vocab_size + (pad_id is None)  # the extra <BLANK> row, if padding has its own id
        self.wte = Embedding(n_rows, n_embd, dtype=dtype, rng=rng)
        self.mlp = Sequential(
            Linear(context * n_embd, n_hidden, dtype=dtype, rng=rng),
            Tanh(),
            Linear(n_hidden, vocab_size, dtype=dtype, rng=rng),
        )

    def context_ids(self, idx: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, context): [..., k] = idx[t - k], or pad_id where t - k < 0.

        Example, context 3, pad 0: [[5, 6, 7]] -> [[[5, 0, 0], [6, 5, 0], [7, 6, 5]]].
        """
        B, T = idx.shape
        c = self.config.context
        padded = np.concatenate([np.full((B, c - 1), self.pad_id, dtype=idx.dtype), idx], axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, c, axis=1)  # (B, T, c), oldest first
        return windows[..., ::-1]  # most recent first, as makemore concatenates them

    def window_logits(self, windows: np.ndarray) -> Tensor:
        """Logits (..., V) for explicit context windows (..., context), most recent id first."""
        emb = self.wte(windows)  # (..., context, n_embd)
        x = emb.reshape(*windows.shape[:-1], self.config.context * self.config.n_embd)  # (..., context * n_embd)
        return self.mlp(x)  # (..., V)

    def forward(self, idx: Any, targets: Any = None) -> tuple[Tensor, Tensor | None]:
        idx, targets = check_ids("MLPLM", idx, targets, self.vocab_size)
        logits = self.window_logits(self.context_ids(idx))  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def init_state(self, batch_size: int = 1) -> WindowState:
        """The decoding state: each sequence's last `context` ids, `pad_id` before its start."""
        return WindowState(batch_size, self.config.context, fill=self.pad_id)

    def step(self, state: WindowState, ids: Any, mask: Any = None) -> np.ndarray:
        """Feed ids (B, T); the logits (B, V) of the next token, from the last window."""
        ids, mask = check_step_ids("MLPLM", ids, mask, state.batch_size, self.vocab_size)
        state.push(ids, mask)
        if (state.seen == 0).any():
            raise ValueError("MLPLM: every sequence needs at least one token to predict from")
        return self.window_logits(state.window[:, ::-1]).data  # most recent id first

    def extra_repr(self) -> str:
        c = self.config
        return f"vocab_size={c.vocab_size}, context={c.context}, n_embd={c.n_embd}, n_hidden={c.n_hidden}"
