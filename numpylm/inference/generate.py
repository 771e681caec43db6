"""Autoregressive generation, part 3 of the guide: a language model writes by predicting one
token, appending it, and predicting again.

`generate` works with every model family through the decoding contract of
`numpylm.models.base`: `state = model.init_state(B)`, then `logits = model.step(state, ids)`
with the prompt, then with one new token per step. What the state holds (a KV cache, a
hidden state, the last few ids) is the family's business; each new token costs one step of
it. Several prompts of different lengths run as one batch, left-padded with a mask that each
family makes invisible, so each prompt gets exactly the tokens it would get alone.

A model's context limit is its `block_size` (None: unlimited). A prompt longer than it is
cropped to its last `block_size` tokens, with a warning; a transformer whose context fills
up slides its window (see `numpylm.models.decoding`).

`use_cache=False` (or a model without `init_state`) takes the slow road that needs no state
at all: run `forward` on the whole (cropped) sequence for every new token and keep the last
position's logits. The tests prove both roads give the same tokens for every family.
How each token is chosen is a `SamplingParams` (numpylm.inference.sampling).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from numpylm.autograd.tensor import Tensor
from numpylm.inference.sampling import SamplingParams, as_sampling_params
from numpylm.nn.module import evaluating


def context_limit(model: Any) -> int | None:
    """The longest context `model` accepts: its `block_size` (None: no limit)."""
    limit = getattr(model, "block_size", None)
    return None if limit is None else int(limit)


def end_of_text_ids(model: Any, tokenizer: Any = None) -> tuple[int, ...]:
    """The ids that end a text for this model and tokenizer: the model's own end-of-sequence
    id (an n-gram's boundary id), the tokenizer's `eos_id`, or GPT-2's `<|endoftext|>`."""
    ids = [getattr(model, "eos_id", None), getattr(tokenizer, "eos_id", None)]
    special = getattr(tokenizer, "special_tokens", None)
    if isinstance(special, dict):
        ids.append(special.get("<|endoftext|>"))
    vocab = getattr(model, "vocab_size", None)
    return tuple(sorted({int(i) for i in ids
                         if i is not None and (vocab is None or 0 <= int(i) < vocab)}))


def _as_prompts(idx: Any, allow_empty: bool) -> tuple[list[np.ndarray], bool]:
    """(list of 1-D int64 prompts, whether the input was a single prompt)."""
    if isinstance(idx, Tensor):
        idx = idx.data
    if isinstance(idx, np.ndarray) and idx.ndim == 2:
        rows, single = list(idx), False
    elif isinstance(idx, (list, tuple)) and idx and all(
            isinstance(r, (list, tuple, np.ndarray)) for r in idx):
        rows, single = list(idx), False
    else:
        rows, single = [idx], True
    prompts = []
    for i, row in enumerate(rows):
        row = np.asarray(row)
        if row.ndim != 1 or (row.size and not np.issubdtype(row.dtype, np.integer)):
            raise ValueError(f"generate: prompt {i} must be a 1-D sequence of token ids, "
                             f"got dtype {row.dtype} and shape {row.shape}")
        if row.size == 0 and not allow_empty:
            raise ValueError(f"generate: prompt {i} is empty; give at least one token")
        prompts.append(row.astype(np.int64))
    return prompts, single


def _crop(prompts: list[np.ndarray], limit: int | None) -> list[np.ndarray]:
    if limit is None:
        return prompts
    for i, p in enumerate(prompts):
        if len(p) > limit:
            warnings.warn(f"generate: prompt {i} has {len(p)} tokens, more than the model's "
                          f"block_size {limit}; keeping its last {limit} tokens", stacklevel=3)
    return [p[-limit:] for p in prompts]


def generate_stream(model: Any, idx: Any, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    seed: int | np.random.Generator | None = None,
                    stop_tokens: Sequence[int] | None = None, use_cache: bool = True, *,
                    sampling: SamplingParams | None = None) -> Iterator[Any]:
    """Yield each new token as soon as it is chosen.

    For one prompt (a 1-D sequence of ids) each item is an `int`; for a batch (a 2-D array
    or a list of prompts) each item is an int64 array (B,) (rows that have already stopped
    repeat their stop token). Stops after `max_new_tokens`, or once every row has produced
    one of the stop tokens (which is yielded too). Arguments are as for `generate`.
    """
    params = as_sampling_params(sampling, temperature, top_k, top_p, seed, stop_tokens)
    stepping = use_cache and hasattr(model, "init_state")
    prompts, single = _as_prompts(idx, allow_empty=stepping)
    for tokens, _, _ in _steps(model, prompts, max_new_tokens, params, stepping):
        yield int(tokens[0]) if single else tokens


def generate(model: Any, idx: Any, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             seed: int | np.random.Generator | None = None,
             stop_tokens: Sequence[int] | None = None, use_cache: bool = True, *,
             sampling: SamplingParams | None = None) -> Any:
    """Continue `idx` by up to `max_new_tokens` tokens; return prompt + new tokens (the
    whole prompt, even when the model only saw its last `block_size` tokens).

    `idx` is one prompt (a 1-D sequence of ids; returns a 1-D int64 array) or several
    (a 2-D array, or a list of possibly different-length prompts; returns a list of 1-D
    arrays). How tokens are chosen is `sampling` (a `SamplingParams`), or the same settings
    as separate arguments: `temperature=0` is greedy; `top_k`/`top_p` filter the
    distribution (see `numpylm.inference.sampling`); `seed` (an int or a Generator) makes
    sampling repeatable; a row ends after the first of `stop_tokens` it produces (the stop
    token is kept). `use_cache=False` reruns `forward` on the whole context every step
    instead of stepping a decoding state (to compare). The model is put in eval mode during
    generation and restored after. An empty prompt is allowed for models that can predict
    from nothing (an n-gram model starts from its begin-of-sequence context).
    """
    params = as_sampling_params(sampling, temperature, top_k, top_p, seed, stop_tokens)
    stepping = use_cache and hasattr(model, "init_state")
    prompts, single = _as_prompts(idx, allow_empty=stepping)
    outputs = [list(p) for p in prompts]
    for tokens, active, _ in _steps(model, prompts, max_new_tokens, params, stepping):
        for i in np.flatnonzero(active):
            outputs[i].append(int(tokens[i]))
    arrays = [np.asarray(o, dtype=np.int64) for o in outputs]
    return arrays[0] if single else arrays


def _steps(model, prompts: list[np.ndarray], max_new_tokens: int, params: SamplingParams,
           stepping: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (next tokens (B,), which rows were still running and took them, the model's
    logits (B, V) they were chosen from, before any processor)."""
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0, "
                         f"got {max_new_tokens!r}")
    rng = params.rng()
    stops = np.asarray(params.stop_tokens, dtype=np.int64)
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and (stops >= vocab).any():
        raise ValueError(f"generate: stop token {int(stops[stops >= vocab][0])} is outside the "
                         f"model's vocabulary [0, {vocab})")
    limit = context_limit(model)
    # The processors (penalties, bans) see each whole sequence so far, prompt uncropped.
    contexts = [list(p) for p in prompts] if params.processes else None
    prompts = _crop(prompts, limit)
    with evaluating(model):  # the stepper runs the prompt here
        stepper = (_StateStepper(model, prompts) if stepping
                   else _PlainStepper(model, prompts, limit))
    active = np.ones(len(prompts), dtype=bool)
    for step in range(max_new_tokens):
        tokens = params.sample(stepper.logits, rng, contexts, step)  # (B,)
        if contexts is not None:
            for context, token in zip(contexts, tokens):
                context.append(int(token))
        # Yield outside evaluating(): a streaming caller runs its own code between tokens,
        # with its own grad mode and the model in its own train/eval mode.
        yield tokens, active.copy(), stepper.logits
        active &= ~np.isin(tokens, stops)
        if not active.any() or step == max_new_tokens - 1:
            break
        with evaluating(model):
            stepper.append(tokens)


def _left_padded(prompts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The prompts as one (B, L) array padded on the left, and the mask of real tokens
    (None when all prompts have the same length)."""
    L = max(map(len, prompts))
    ids = np.zeros((len(prompts), L), dtype=np.int64)
    mask = np.zeros((len(prompts), L), dtype=bool)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = p
        mask[i, L - len(p):] = True
    return ids, None if mask.all() else mask


class _StateStepper:
    """The decoding contract: feed the prompts once, then one token per step."""

    def __init__(self, model, prompts: list[np.ndarray]) -> None:
        self.model = model
        self.state = model.init_state(len(prompts))
        self.logits = model.step(self.state, *_left_padded(prompts))

    def append(self, tokens: np.ndarray) -> None:
        self.logits = self.model.step(self.state, tokens[:, None])


def _last_logits(model, idx: np.ndarray) -> np.ndarray:
    logits, _ = model(idx)
    return np.asarray(logits.data if isinstance(logits, Tensor) else logits)[:, -1, :]


class _PlainStepper:
    """Without a state: rerun `forward` on the last `limit` tokens of each sequence."""

    def __init__(self, model, prompts: list[np.ndarray], limit: int | None) -> None:
        self.model, self.limit = model, limit
        self.seqs = [list(p) for p in prompts]
        self.logits = self._run()

    def _run(self) -> np.ndarray:
        windows = [np.asarray(s[-self.limit:] if self.limit else s) for s in self.seqs]
        if len({len(w) for w in windows}) == 1:  # equal lengths: one batched call
            return _last_logits(self.model, np.stack(windows))
        # Different lengths: each row alone, so no model needs to understand padding.
        return np.concatenate([_last_logits(self.model, w[None, :]) for w in windows])

    def append(self, tokens: np.ndarray) -> None:
        for seq, t in zip(self.seqs, tokens):
            seq.append(int(t))
        self.logits = self._run()
