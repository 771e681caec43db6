"""Looking ahead and taking it back, part 3 of the guide: what speculative decoding needs of a
model beyond the one-token `step` of the decoding contract (`numpylm.models.base`).

A `Cursor` is one sequence being decoded by one model. It can
- **feed** a run of tokens and return the model's logits after *every* one of them, and
- **rewind** to an earlier length, as if the tokens after it had never been fed.

How cheaply it does each depends on the state the family keeps:

| state | feed T tokens | rewind |
|---|---|---|
| KV cache (GPT, Llama) | one call scoring all T positions | cut the cache, free |
| hidden state (RNN, LSTM, GRU) | T one-token steps | restore a copy taken after each token |
| window (n-gram, bigram, MLP) | T one-token steps | restore a copy taken after each token |

Scoring T positions in one call is what makes speculative decoding pay: the contract's `step`
returns the last position's logits only, so a transformer is run here through its named
inference stepper with every position kept (`forward_logits(..., last_only=False)`, the same
arithmetic `step` runs). Another family whose state is a `TransformerState` can offer
`step_all(state, ids) -> logits (B, T, V)` and is then used through that; any other family is
fed one step per token, which is always correct (and a recurrence is sequential anyway).

Cutting a KV cache (`TransformerState.truncate`) is free. Copies cost the size of the state per
fed token: a few vectors for a recurrent network, but the whole KV cache for a transformer,
which is why a transformer is only copied when its window is about to slide (the cache is
rebuilt then, so its columns no longer line up with the tokens fed and cannot be cut).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from numpylm.models.base import check_step_ids
from numpylm.models.decoding import TransformerState, snapshot_state, transformer_step

__all__ = ["Cursor", "all_position_stepper"]

# forward_logits(model, ids (B, T), positions (B, T), cache, attn_mask, last_only) -> (B, T, V)
ForwardLogits = Callable[..., np.ndarray]


def all_position_stepper(model: Any) -> ForwardLogits | None:
    """The inference stepper that returns the logits of every position for this model's
    family, or None when the family has none (then tokens are fed one step at a time)."""
    from numpylm.models import gpt_inference, llama_inference
    from numpylm.models.gpt import GPT
    from numpylm.models.llama import Llama
    if isinstance(model, GPT):
        return gpt_inference.forward_logits
    if isinstance(model, Llama):
        return llama_inference.forward_logits
    return None


class Cursor:
    """One sequence decoded by `model`, fed a `prompt` (1-D ids) at once.

    `tokens` are the ids fed so far and `logits` (V,) the model's scores for the next one.
    `mark(lookahead)` starts a stretch that may be taken back: `feed` up to `lookahead` more
    tokens, then `rewind(length)` to any length since the mark.
    """

    def __init__(self, model: Any, prompt: Sequence[int]) -> None:
        self.model = model
        self.state = model.init_state(1)
        self.tokens = [int(t) for t in prompt]
        self.logits = np.asarray(model.step(self.state, np.asarray([self.tokens], np.int64)))[0]
        self.calls = 1  # step calls made, to report what lookahead costs
        self._base: int | None = None
        self._stepper = all_position_stepper(model)

    def mark(self, lookahead: int) -> None:
        """From here, up to `lookahead` tokens may be fed and taken back."""
        self._base = len(self.tokens)
        self._after = [self.logits]  # logits after each length since the mark
        state = self.state
        self._cut = (isinstance(state, TransformerState) and state.batch_size == 1
                     and state.cache.length + lookahead <= state.capacity)
        self._columns = state.cache.length if self._cut else None
        self._copies = None if self._cut else [snapshot_state(state)]

    def feed(self, tokens: Sequence[int]) -> np.ndarray:
        """Feed `tokens`; the logits (T, V) after each of them (row t: after tokens[t])."""
        if self._base is None:
            raise ValueError("Cursor.feed: call mark(lookahead) first")
        ids = np.asarray([list(tokens)], dtype=np.int64)  # (1, T)
        T = ids.shape[1]
        if T == 0:
            return np.zeros((0, self.logits.shape[-1]))
        stepper = self._stepper
        if self._cut and hasattr(self.model, "step_all"):
            rows = np.asarray(self.model.step_all(self.state, ids))[0]
            self.calls += 1
        elif self._cut and stepper is not None:
            rows = self._run_all(stepper, ids)
        else:
            rows = self._run_one_by_one(ids)
        self.tokens.extend(ids[0].tolist())
        self._after.extend(rows)
        self.logits = rows[-1]
        return rows

    def _run_all(self, forward_logits: ForwardLogits, ids: np.ndarray) -> np.ndarray:
        """One call of the transformer's inference stepper, every position's logits kept."""
        model, state = self.model, self.state
        ids, _ = check_step_ids(type(model).__name__, ids, None, 1, model.vocab_size)

        def run(ids, positions, attention):
            attn = None if attention is None else attention[:, None, None, :]
            return forward_logits(model, ids, positions, state.cache, attn, last_only=False)

        self.calls += 1
        return np.asarray(transformer_step(state, ids, None, run))[0]  # (T, V)

    def _run_one_by_one(self, ids: np.ndarray) -> np.ndarray:
        rows = []
        for t in range(ids.shape[1]):
            rows.append(np.asarray(self.model.step(self.state, ids[:, t:t + 1]))[0])
            self.calls += 1
            if self._copies is not None:
                self._copies.append(snapshot_state(self.state))
        return np.stack(rows)

    def rewind(self, length: int) -> None:
        """Go back to the first `length` tokens (no earlier than the mark)."""
        base = self._base
        if base is None or not base <= length <= len(self.tokens):
            raise ValueError(f"Cursor.rewind: length must lie in [{base}, {len(self.tokens)}] "
                             f"(from the mark to the tokens fed), got {length}")
        kept = length - base
        if self._copies is not None:
            self.state = self._copies[kept]
        else:
            self.state.truncate(self._columns + kept)
        del self.tokens[length:]
        self.logits = self._after[kept]
        self._base = None
