"""Autoregressive generation, part 3 of the guide: a language model writes by predicting one
token, appending it, and predicting again.

`generate` works with every model family: anything whose `forward(idx)` returns
`(logits, loss)` with logits (B, T, V). A model's context limit is its `block_size` (or
`config.block_size`); a model with neither has an unlimited context. The context the model
sees is always the last `block_size` tokens: a longer prompt is cropped to them, with a
warning.

A model that offers `init_kv_cache` (GPT) is run with a KV cache: the prompt is processed
once, then each step feeds one token. Several prompts of different lengths are run as one
batch by left-padding them to the same length, with an attention mask that hides the
padding from every real token and positions that start at 0 at each prompt's first real
token, so each prompt gets exactly the tokens it would get alone. Once a sequence fills the
whole context, the cache is rebuilt each step from the last `block_size` tokens (a sliding
window), which is what running without the cache does.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from numpylm.autograd.tensor import Tensor
from numpylm.inference.sampling import check_sampling_args, sample_next
from numpylm.nn.module import evaluating


def context_limit(model: Any) -> int | None:
    """The longest context `model` accepts: its `block_size`, `config.block_size`, or None."""
    limit = getattr(model, "block_size", None)
    if limit is None:
        limit = getattr(getattr(model, "config", None), "block_size", None)
    return None if limit is None else int(limit)


def _as_prompts(idx: Any) -> tuple[list[np.ndarray], bool]:
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
        if row.size == 0:
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
                    stop_tokens: Sequence[int] | None = None,
                    use_cache: bool = True) -> Iterator[Any]:
    """Yield each new token as soon as it is chosen.

    For one prompt (a 1-D sequence of ids) each item is an `int`; for a batch (a 2-D array
    or a list of prompts) each item is an int64 array (B,) (rows that have already stopped
    repeat their stop token). Stops after `max_new_tokens`, or once every row has produced
    one of `stop_tokens` (which is yielded too). Arguments are as for `generate`.
    """
    prompts, single = _as_prompts(idx)
    for tokens, _ in _steps(model, prompts, max_new_tokens, temperature, top_k, top_p, seed,
                            stop_tokens, use_cache):
        yield int(tokens[0]) if single else tokens


def generate(model: Any, idx: Any, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             seed: int | np.random.Generator | None = None,
             stop_tokens: Sequence[int] | None = None, use_cache: bool = True) -> Any:
    """Continue `idx` by up to `max_new_tokens` tokens; return prompt + new tokens (the
    whole prompt, even when the model only saw its last `block_size` tokens).

    `idx` is one prompt (a 1-D sequence of ids; returns a 1-D int64 array) or several
    (a 2-D array, or a list of possibly different-length prompts; returns a list of 1-D
    arrays). `temperature=0` is greedy; `top_k`/`top_p` filter the distribution (see
    `numpylm.inference.sampling`); `seed` (an int or a Generator) makes sampling repeatable.
    A row ends after the first of `stop_tokens` it produces (the stop token is kept).
    `use_cache=False` reruns the whole context every step (for models with a KV cache,
    to compare). The model is put in eval mode during generation and restored after.
    """
    prompts, single = _as_prompts(idx)
    outputs = [list(p) for p in prompts]
    for tokens, active in _steps(model, prompts, max_new_tokens, temperature, top_k, top_p,
                                 seed, stop_tokens, use_cache):
        for i in np.flatnonzero(active):
            outputs[i].append(int(tokens[i]))
    arrays = [np.asarray(o, dtype=np.int64) for o in outputs]
    return arrays[0] if single else arrays


def _steps(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, stop_tokens,
           use_cache) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (next tokens (B,), which rows were still running and took them)."""
    check_sampling_args(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0, "
                         f"got {max_new_tokens!r}")
    rng = np.random.default_rng(seed)  # a Generator passes through as it is
    stops = np.asarray(sorted(set(stop_tokens or ())), dtype=np.int64)
    limit = context_limit(model)
    prompts = _crop(prompts, limit)
    cached = use_cache and hasattr(model, "init_kv_cache")
    with evaluating(model):  # the cached stepper runs the prompt here
        stepper = (_CachedStepper(model, prompts, limit) if cached
                   else _PlainStepper(model, prompts, limit))
    active = np.ones(len(prompts), dtype=bool)
    for step in range(max_new_tokens):
        tokens = sample_next(stepper.next_logits(), temperature, top_k, top_p, rng)  # (B,)
        # Yield outside evaluating(): a streaming caller runs its own code between tokens,
        # with its own grad mode and the model in its own train/eval mode.
        yield tokens, active.copy()
        active &= ~np.isin(tokens, stops)
        if not active.any() or step == max_new_tokens - 1:
            break
        with evaluating(model):
            stepper.append(tokens)


def _last_logits(model, idx: np.ndarray) -> np.ndarray:
    logits, _ = model(idx)
    return np.asarray(logits.data if isinstance(logits, Tensor) else logits)[:, -1, :]


class _PlainStepper:
    """Without a cache: rerun the model on the last `limit` tokens of each sequence."""

    def __init__(self, model, prompts: list[np.ndarray], limit: int | None) -> None:
        self.model, self.limit = model, limit
        self.seqs = [list(p) for p in prompts]

    def next_logits(self) -> np.ndarray:
        windows = [np.asarray(s[-self.limit:] if self.limit else s) for s in self.seqs]
        if len({len(w) for w in windows}) == 1:  # equal lengths: one batched call
            return _last_logits(self.model, np.stack(windows))
        # Different lengths: each row alone, so no model needs to understand padding.
        return np.concatenate([_last_logits(self.model, w[None, :]) for w in windows])

    def append(self, tokens: np.ndarray) -> None:
        for seq, t in zip(self.seqs, tokens):
            seq.append(int(t))


class _CachedStepper:
    """With a KV cache: prefill the (left-padded) prompts once, then feed one token a step."""

    def __init__(self, model, prompts: list[np.ndarray], limit: int | None) -> None:
        self.model, self.limit = model, limit
        self.seqs = [list(p) for p in prompts]
        B = len(prompts)
        self.capacity = limit if limit is not None else max(map(len, prompts)) + 4096
        self.cache = model.init_kv_cache(B, self.capacity)
        self.mask = np.zeros((B, self.capacity), dtype=bool)  # True at real tokens
        self.lengths = np.zeros(B, dtype=np.int64)  # real tokens of each row in the cache
        self.padded = False
        self._logits = self._prefill()

    def _prefill(self) -> np.ndarray:
        """Reset the cache and run the last `limit` tokens of every row through the model."""
        windows = [s[-self.limit:] if self.limit else s for s in self.seqs]
        L = max(map(len, windows))
        B = len(windows)
        idx = np.zeros((B, L), dtype=np.int64)
        self.mask[:] = False
        for i, w in enumerate(windows):
            idx[i, L - len(w):] = w  # left padding: every row's last token is at column L-1
            self.mask[i, L - len(w):L] = True
        self.lengths = np.array([len(w) for w in windows], dtype=np.int64)
        self.padded = bool((self.lengths < L).any())
        # Positions count real tokens only, so a padded prompt sees the positions it would
        # see alone; padding gets position 0 (it is never attended to, so it does not matter).
        positions = np.maximum(np.cumsum(self.mask[:, :L], axis=1) - 1, 0)
        self.cache.reset()
        logits, _ = self.model(idx, kv_cache=self.cache, position_ids=positions,
                               attention_mask=self.mask[:, :L] if self.padded else None,
                               last_only=True)
        return logits.data[:, -1, :]

    def next_logits(self) -> np.ndarray:
        return self._logits

    def append(self, tokens: np.ndarray) -> None:
        for seq, t in zip(self.seqs, tokens):
            seq.append(int(t))
        if self.cache.length + 1 > self.capacity:
            self._logits = self._prefill()  # the context is full: slide the window
            return
        L = self.cache.length
        self.mask[:, L] = True
        positions = self.lengths[:, None].copy()  # (B, 1): the next position of each row
        self.lengths += 1
        logits, _ = self.model(tokens[:, None], kv_cache=self.cache, position_ids=positions,
                               attention_mask=self.mask[:, :L + 1] if self.padded else None,
                               last_only=True)
        self._logits = logits.data[:, -1, :]
