"""The neural bigram: a (V, V) table of logits trained by gradient descent, the bridge from
counting to learning.

Row h of the table holds the logits of P(. | h); the model is softmax(W[h]). Minimising the
mean cross-entropy over a corpus sets, at the optimum, the gradient of every row to zero:
    d/dW[h, w] = (c(h) / N) (softmax(W[h])_w - c(h w) / c(h)) = 0,
so wherever every bigram of a seen row occurs, gradient descent converges to the count
model's MLE, softmax(W[h]) = c(h w) / c(h) (the logits tend to log counts plus a constant
per row). A bigram that never occurs has no finite optimum (its logit drifts to -inf),
and a row h never seen gets no gradient at all and stays uniform from the zero init.
Weight decay (an L2 penalty on the logits) pulls each row towards uniform, which smooths
like add-k does, but it is not the same estimator: add-k adds k to the counts (a Dirichlet
prior on the probabilities), L2 shrinks logits; no choice of penalty reproduces add-k
exactly.

The interface shared by every neural model (after makemore): `forward(idx, targets=None)
-> (logits, loss)`, idx (B, T) int ids, logits (B, T, V), loss the mean cross-entropy over
targets that are not -1, or None. `block_size` is None: `forward` reads any length, and
only the last token matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import numpylm.functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.models.decoding import WindowState
from numpylm.nn import Module, Parameter

@dataclass
class BigramConfig:
    vocab_size: int  # V: number of token ids


class BigramLM(Module):
    """logits(B, T, V) = W[idx]: one row of V logits per previous token."""

    def __init__(self, vocab_size: int, dtype: Any = np.float32) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"BigramLM: vocab_size must be an integer >= 1, got {vocab_size!r}")
        self.config = BigramConfig(int(vocab_size))
        self.vocab_size = int(vocab_size)
        self.block_size = None  # any length; only the last id matters
        # Zero logits: every row starts as the uniform distribution (as in makemore).
        self.logits = Parameter(np.zeros((vocab_size, vocab_size)), dtype)

    def forward(self, idx: Any, targets: Any = None) -> tuple[Tensor, Tensor | None]:
        idx, targets = check_ids("BigramLM", idx, targets, self.vocab_size)
        logits = F.embedding(idx, self.logits)  # (B, T, V): the row of each previous token
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def init_state(self, batch_size: int = 1) -> WindowState:
        """The decoding state: each sequence's last id (the only one the model reads)."""
        return WindowState(batch_size, 1, fill=0)

    def step(self, state: WindowState, ids: Any, mask: Any = None) -> np.ndarray:
        """Feed ids (B, T); the logits (B, V) of the next token: the rows of the last ids."""
        ids, mask = check_step_ids("BigramLM", ids, mask, state.batch_size, self.vocab_size)
        state.push(ids, mask)
        if (state.seen == 0).any():
            raise ValueError("BigramLM: every sequence needs at least one token to predict from")
        return self.logits.data[state.window[:, -1]].copy()

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}"
