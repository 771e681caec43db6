"""The one contract every language model in numpylm follows, part 2 of the guide: what "a
language model" means to the code that trains, decodes, evaluates and serves it.

A language model maps token ids to a distribution over the next token. Every family, from
count n-grams to transformers, offers the same four things:

1. **`forward(idx, targets=None) -> (logits, loss)`**: ids (B, T) to logits (B, T, V), the
   scores of the token after each position; with targets (B, T), also the mean
   cross-entropy over every target that is not `IGNORE_INDEX` (-1, padding). The training
   loop and the evaluator only ever call this.
2. **`vocab_size`** (V) and **`block_size`**: the longest context the model can see, or
   None when it has no limit (a recurrent model carries its whole past in its state).
3. **`init_state(batch_size) -> state`**: an empty decoding state for B sequences.
4. **`step(state, ids, mask=None) -> logits`**: feed ids (B, T) (the prompt at once, then one
   token at a time) and get the logits (B, V) of the token after the last one. What the state
   holds is each family's own business, and the reason decoding is cheap:
   - a transformer keeps the keys and values of every past token (the KV cache), so a new
     token costs one position of work instead of the whole window;
   - a recurrent network keeps its hidden state, which summarises everything read so far,
     so a new token costs one step of the recurrence;
   - an n-gram, the bigram and the MLP keep only the last few ids: their prediction depends
     on nothing else.
   `mask` (B, T) is False at left padding, so prompts of different lengths decode as one batch;
   each family makes padding invisible (positions and attention for a transformer, a frozen
   state for a recurrent network, dropped ids for a window).

One `generate` (numpylm.inference) serves every family through 3 and 4, and the tests prove
for each family that stepping gives the same greedy tokens as running `forward` on the
growing sequence, the slow way that needs no state at all.

`LanguageModel` below writes the contract down as a `typing.Protocol` (structural: a class
follows it by having these members, it need not inherit). `check_ids` is the one validation of
ids and targets that every family's `forward` uses.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from numpylm.autograd.tensor import Tensor

__all__ = ["IGNORE_INDEX", "LanguageModel", "as_array", "check_ids", "check_step_ids"]

IGNORE_INDEX = -1  # targets equal to this are not counted in the loss (padding, prompts)


@runtime_checkable
class LanguageModel(Protocol):
    """What `train`, `generate`, `evaluate` and the serving engine need of a model."""

    vocab_size: int

    @property
    def block_size(self) -> int | None: ...

    def forward(self, idx: Any, targets: Any = None) -> tuple[Any, Any]: ...

    def init_state(self, batch_size: int = 1) -> Any: ...

    def step(self, state: Any, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...


def as_array(x: Any) -> np.ndarray:
    """The numpy array of `x` (a Tensor's data, or `np.asarray(x)`)."""
    return np.asarray(x.data if isinstance(x, Tensor) else x)


_FEW_IDS = 64  # ids checked as a Python list (one step's, a round of drafts)


def _first_out_of_range(ids: np.ndarray, vocab_size: int, allowed: int | None = None):
    if ids.size <= _FEW_IDS:  # decoding's few ids: Python's min and max cost less than numpy's
        few = ids.ravel().tolist()
        if few and 0 <= min(few) and max(few) < vocab_size:
            return None
    elif 0 <= ids.min() and ids.max() < vocab_size:
        return None  # all in range: two reductions
    bad = (ids < 0) | (ids >= vocab_size)
    if allowed is not None:
        bad &= ids != allowed
    return ids[bad].flat[0] if bad.any() else None


def check_ids(model: str, idx: Any, targets: Any, vocab_size: int,
              allow_1d: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate (B, T) integer ids and optional targets of the same shape.

    Ids must lie in [0, vocab_size); targets too, or equal `IGNORE_INDEX`. With `allow_1d`
    a single row (T,) is taken as (1, T). Returns the two arrays; raises a `ValueError` that
    names `model`, the shapes and the first offending id.
    """
    idx = as_array(idx)
    if allow_1d and idx.ndim == 1:
        idx = idx[None, :]
    if idx.ndim != 2 or idx.dtype.kind not in "iu":  # signed or unsigned integers
        raise ValueError(f"{model}: idx must be integer token ids of shape (B, T), "
                         f"got dtype {idx.dtype} and shape {idx.shape}")
    bad = _first_out_of_range(idx, vocab_size)
    if bad is not None:
        raise ValueError(f"{model}: token id {bad} is outside the vocabulary [0, {vocab_size})")
    if targets is None:
        return idx, None
    targets = as_array(targets)
    if allow_1d and targets.ndim == 1:
        targets = targets[None, :]
    if targets.shape != idx.shape or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{model}: targets must be integers of the same shape as idx "
                         f"{idx.shape}, got dtype {targets.dtype} and shape {targets.shape}")
    bad = _first_out_of_range(targets, vocab_size, allowed=IGNORE_INDEX)
    if bad is not None:
        raise ValueError(f"{model}: target {bad} is outside [0, {vocab_size}) and not "
                         f"{IGNORE_INDEX} (ignored)")
    return idx, targets


def check_step_ids(model: str, ids: Any, mask: Any, batch_size: int,
                   vocab_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate the ids (B, T) and optional padding mask (B, T) given to `step`.

    The mask is True at real tokens; padding may only come before a row's real tokens (left
    padding), so that every row's last column is its newest token. An all-True mask is
    returned as None (no padding to hide).
    """
    ids, _ = check_ids(model, ids, None, vocab_size)
    if ids.shape[0] != batch_size:
        raise ValueError(f"{model}: the decoding state holds {batch_size} sequences, "
                         f"got ids for {ids.shape[0]}")
    if mask is None:
        return ids, None
    mask = as_array(mask)
    if mask.shape != ids.shape or mask.dtype != bool:
        raise ValueError(f"{model}: mask must be boolean of the shape of ids {ids.shape}, "
                         f"got dtype {mask.dtype} and shape {mask.shape}")
    if (mask[:, :-1] & ~mask[:, 1:]).any():
        raise ValueError(f"{model}: mask has a real token before padding; only left "
                         f"padding is supported (False, ..., False, True, ..., True)")
    return ids, None if mask.all() else mask
