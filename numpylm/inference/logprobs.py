"""Log-probabilities of generated tokens, part 3 of the guide: how sure the model was of each
token it wrote, and what else it considered (OpenAI's `logprobs` and `top_logprobs`).

For the logits z (V,) a token t was chosen from, its log-probability is the log-softmax
    log p(t) = z_t - log sum_j exp(z_j),
computed as z_t - max(z) - log sum_j exp(z_j - max(z)) so that no exp overflows. These are the
model's own probabilities, before the temperature, the filters and the logit processors
reshape them for sampling (what OpenAI's API and vLLM report by default): a token chosen at a
high temperature can have a very low logprob, which is the point of looking. The top
alternatives are the `top_logprobs` most likely tokens, most likely first (ties: the lowest id
first), whether or not one of them was chosen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from numpylm.inference.generate import _as_prompts, _steps
from numpylm.inference.sampling import SamplingParams, as_sampling_params

__all__ = ["MAX_TOP_LOGPROBS", "TokenLogprob", "generate_with_logprobs", "log_softmax",
           "token_logprobs"]

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its id, its log-probability, and the `top` alternatives as
    (id, logprob) pairs, most likely first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = field(default=())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _check_top(top_logprobs: int) -> None:
    if (not isinstance(top_logprobs, (int, np.integer))
            or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS):
        raise ValueError(f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], "
                         f"got {top_logprobs!r}")


def token_logprobs(logits: np.ndarray, tokens: np.ndarray,
                   top_logprobs: int = 0) -> list[TokenLogprob]:
    """A `TokenLogprob` for each row of logits (B, V) and its chosen token (B,)."""
    _check_top(top_logprobs)
    lp = log_softmax(logits)
    records = []
    for row, token in zip(lp, np.asarray(tokens)):
        # A stable sort of -lp: most likely first, the lowest id first among ties.
        best = np.argsort(-row, kind="stable")[:top_logprobs]
        records.append(TokenLogprob(int(token), float(row[token]),
                                    tuple((int(i), float(row[i])) for i in best)))
    return records


def generate_with_logprobs(model: Any, idx: Any, max_new_tokens: int, top_logprobs: int = 0,
                           *, sampling: SamplingParams | None = None,
                           use_cache: bool = True) -> tuple[Any, Any]:
    """`generate` (same arguments, `sampling` default: `SamplingParams()`) that also returns,
    for every new token, a `TokenLogprob` with its `top_logprobs` best alternatives.

    One prompt gives (ids (T,), [TokenLogprob, ...]); several give (list of ids, list of
    lists), each row's list as long as its new tokens.
    """
    _check_top(top_logprobs)
    params = as_sampling_params(sampling)
    stepping = use_cache and hasattr(model, "init_state")
    prompts, single = _as_prompts(idx, allow_empty=stepping)
    outputs = [list(p) for p in prompts]
    records: list[list[TokenLogprob]] = [[] for _ in prompts]
    for tokens, active, logits in _steps(model, prompts, max_new_tokens, params, stepping):
        rows = token_logprobs(logits, tokens, top_logprobs)
        for i in np.flatnonzero(active):
            outputs[i].append(int(tokens[i]))
            records[i].append(rows[i])
    arrays = [np.asarray(o, dtype=np.int64) for o in outputs]
    return (arrays[0], records[0]) if single else (arrays, records)
