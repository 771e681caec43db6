"""Logit processors, part 3 of the guide: reshaping the next-token scores before sampling, to
discourage repetition, ban or favour tokens, and keep a sequence going.

Each processor is a function of the logits z (V,) of one sequence and what it has produced so
far; they compose by running one after another, always in this order (HF transformers' order
for the ones it has, with OpenAI's penalties after its repetition penalty):

1. `logit_bias` (OpenAI): z[j] += bias[j], a fixed nudge per token (-100 bans, +100 forces).
2. `repetition_penalty` r (Keskar et al. 2019, CTRL; HF's definition): every token present in the
   context (prompt and output) has its logit divided by r when positive and multiplied by r when
   negative, so r > 1 always lowers it.
3. `frequency_penalty` a_f and `presence_penalty` a_p (OpenAI's definition), over the *generated*
   tokens only: z[j] -= c[j] * a_f + [c[j] > 0] * a_p, with c[j] how often j was generated.
4. `no_repeat_ngram_size` n (HF): a token that would complete an n-gram already present in the
   context is banned (z = -inf).
5. `bad_words`: sequences of ids that must never appear; the last id of one is banned whenever
   the context ends with the rest of it (a one-id sequence is banned always).
6. `min_new_tokens` m: the stop tokens are banned until m tokens have been generated.

After these come the warpers of `numpylm.inference.sampling`: temperature, top-k, top-p, then
`min_p` p (Nguyen et al. 2024; HF's definition): after the temperature, tokens whose probability
is below p times the largest one are dropped.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["apply_processors", "check_processor_args", "min_p_filter"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and np.isfinite(x)


def check_processor_args(repetition_penalty: float, presence_penalty: float,
                         frequency_penalty: float, min_p: float | None,
                         logit_bias: Mapping[int, float], no_repeat_ngram_size: int,
                         min_new_tokens: int, bad_words: Sequence[Sequence[int]]) -> None:
    """Raise a `ValueError` naming any processor setting outside its range."""
    if not _is_number(repetition_penalty) or repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 changes nothing), "
                         f"got {repetition_penalty!r}")
    for name, value in (("presence_penalty", presence_penalty),
                        ("frequency_penalty", frequency_penalty)):
        if not _is_number(value) or not -2.0 <= value <= 2.0:
            raise ValueError(f"{name} must be in [-2, 2] (OpenAI's range), got {value!r}")
    if min_p is not None and (not _is_number(min_p) or not 0.0 <= min_p <= 1.0):
        raise ValueError(f"min_p must be in [0, 1] or None, got {min_p!r}")
    for token, bias in logit_bias.items():
        if not isinstance(token, (int, np.integer)) or token < 0:
            raise ValueError(f"logit_bias keys must be token ids >= 0, got {token!r}")
        if not _is_number(bias) or not -100.0 <= bias <= 100.0:
            raise ValueError(f"logit_bias values must be in [-100, 100], got {bias!r} "
                             f"for token {token}")
    for name, value in (("no_repeat_ngram_size", no_repeat_ngram_size),
                        ("min_new_tokens", min_new_tokens)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (0 is off), got {value!r}")
    for words in bad_words:
        if len(words) == 0 or any(not isinstance(t, (int, np.integer)) or t < 0 for t in words):
            raise ValueError(f"bad_words must be non-empty sequences of token ids >= 0, "
                             f"got {list(words)!r}")


def apply_processors(logits: np.ndarray, context: Sequence[int], n_new: int,
                     params: Any) -> np.ndarray:
    """Logits (V,) of one sequence after steps 1-6 above, as float64 (a new array).

    `context` is the whole sequence so far (prompt then output), `n_new` how many of its last
    ids were generated; `params` a `SamplingParams`. With every setting at its default this
    returns the logits unchanged.
    """
    z = np.array(logits, dtype=np.float64)
    V = z.shape[-1]
    context = np.asarray(context, dtype=np.int64)
    for token, bias in params.logit_bias:  # 1
        if token < V:
            z[token] += bias
    if params.repetition_penalty != 1.0 and context.size:  # 2
        seen = np.unique(context[context < V])
        r = params.repetition_penalty
        z[seen] = np.where(z[seen] > 0, z[seen] / r, z[seen] * r)
    if (params.frequency_penalty or params.presence_penalty) and n_new:  # 3
        counts = np.bincount(context[len(context) - n_new:], minlength=V)[:V]
        z -= counts * params.frequency_penalty + (counts > 0) * params.presence_penalty
    n = params.no_repeat_ngram_size
    if n and len(context) >= n:  # 4
        z[_ngram_completions(context, n, V)] = -np.inf
    for words in params.bad_words:  # 5
        *prefix, last = words
        if last < V and (not prefix or (len(context) >= len(prefix)
                                        and list(context[len(context) - len(prefix):]) == prefix)):
            z[last] = -np.inf
    if n_new < params.min_new_tokens:  # 6
        stops = [t for t in params.stop_tokens if t < V]
        z[stops] = -np.inf
    return z


def _ngram_completions(context: np.ndarray, n: int, V: int) -> list[int]:
    """Ids that would end an n-gram already in `context`: those that followed an earlier
    occurrence of its last n - 1 ids."""
    if n == 1:
        return [int(t) for t in np.unique(context) if t < V]
    tail = list(context[len(context) - (n - 1):])
    return [int(context[i + n - 1]) for i in range(len(context) - n + 1)
            if list(context[i:i + n - 1]) == tail and context[i + n - 1] < V]


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Logits with -inf where the probability is below `min_p` times the row's largest one
    (the most likely token always stays)."""
    logits = np.asarray(logits, dtype=np.float64)
    # p_j < min_p * p_max  <=>  z_j - z_max < log(min_p), without computing the softmax.
    cut = logits.max(axis=-1, keepdims=True) + np.log(min_p) if min_p > 0 else -np.inf
    return np.where(logits < cut, -np.inf, logits)
