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
targets that are not -1, or None. `block_size` is 1: only the last token matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import numpylm.functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn import Module, Parameter

IGNORE_INDEX = -1  # targets equal to this are not counted in the loss (padding)


@dataclass
class BigramConfig:
    vocab_size: int  # V: number of token ids


def check_ids(model: str, idx: Any, targets: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate (B, T) integer ids and optional targets of the same shape (-1 = ignore)."""
    idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{model}: idx must be a (B, T) integer array, got shape {idx.shape} dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= vocab_size):
        bad = idx[(idx < 0) | (idx >= vocab_size)].flat[0]
        raise ValueError(f"{model}: idx holds id {bad}, outside the vocabulary [0, {vocab_size})")
    if targets is None:
        return idx, None
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.shape != idx.shape or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"{model}: targets must be integers of the same shape as idx {idx.shape}, "
            f"got shape {targets.shape} dtype {targets.dtype}"
        )
    bad = targets[(targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))]
    if bad.size:
        raise ValueError(f"{model}: targets hold id {bad.flat[0]}, outside [0, {vocab_size}) and not -1")
    return idx, targets


class BigramLM(Module):
    """logits(B, T, V) = W[idx]: one row of V logits per previous token."""

    def __init__(self, vocab_size: int, dtype: Any = np.float32) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"BigramLM: vocab_size must be an integer >= 1, got {vocab_size!r}")
        self.config = BigramConfig(int(vocab_size))
        self.vocab_size = int(vocab_size)
        self.block_size = 1
        # Zero logits: every row starts as the uniform distribution (as in makemore).
        self.logits = Parameter(np.zeros((vocab_size, vocab_size)), dtype)

    def forward(self, idx: Any, targets: Any = None) -> tuple[Tensor, Tensor | None]:
        idx, targets = check_ids("BigramLM", idx, targets, self.vocab_size)
        logits = F.embedding(idx, self.logits)  # (B, T, V): the row of each previous token
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}"
