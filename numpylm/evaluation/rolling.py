"""Rolling perplexity, part 4 of the guide: scoring a document longer than the model's window,
every token exactly once, each with as much context as the window allows.

The ids are s_0 .. s_{N-1} (with `prefix_id`, an end-of-text id is put in front, so that s_0
is predicted too, as lm-evaluation-harness does; without it s_0 is only context). A window
of W inputs reads ids s[a:b] (b - a <= W) and predicts s[a+1:b+1]. Windows advance by the
stride S (1 <= S <= W):

    window 1: a = 0,          b = min(W, N - 1)       counts every target it predicts
    window k: b_k = min(b_{k-1} + S, N - 1), a_k = max(0, b_k - W)
              counts only its last b_k - b_{k-1} targets (the new ones)

so target s_t is counted once, in the first window that reaches it, with t - a_k >= W - S + 1
ids of context (fewer only near the start). S = W gives disjoint windows (each window's first
target sees one id of context: fast, pessimistic); S = 1 gives every target a full window
(slow, the best the model can do). The cost is about N / S forward passes of W ids.

With total negative log-likelihood L (nats) over the n counted tokens, and the text of those
tokens having n_bytes UTF-8 bytes and n_words words (runs of non-space characters):

    token perplexity = exp(L / n)
    bits per byte    = L / (n_bytes ln 2)
    word perplexity  = exp(L / n_words)       (lm-evaluation-harness's word_perplexity)

Bits per byte and word perplexity do not depend on the tokenizer, so they compare a
character model with a BPE one.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from numpylm.evaluation.loglikelihood import _log_softmax
from numpylm.models.base import as_array
from numpylm.nn.module import evaluating

__all__ = ["RollingReport", "rolling_loglikelihood", "rolling_report", "rolling_windows"]


def rolling_windows(n_ids: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows over ids s_0..s_{n_ids-1}: (a, b, n_new) with inputs s[a:b] predicting
    s[a+1:b+1], of which the last n_new are counted (see the module docstring)."""
    for name, value in (("window", window), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"rolling_windows: {name} must be an integer >= 1, got {value!r}")
    if stride > window:
        raise ValueError(f"rolling_windows: stride {stride} is larger than the window {window}; "
                         f"tokens between windows would never be scored")
    if n_ids < 2:
        raise ValueError(f"rolling_windows: need at least 2 ids (one to predict from, one to "
                         f"predict), got {n_ids}")
    last = n_ids - 1  # the largest b: inputs end at s_{N-2}, the last target is s_{N-1}
    b = min(window, last)
    spans = [(0, b, b)]
    while b < last:
        end = min(b + stride, last)
        spans.append((max(0, end - window), end, end - b))
        b = end
    return spans


def rolling_loglikelihood(model: Any, ids: Sequence[int], window: int, stride: int | None = None,
                          prefix_id: int | None = None) -> np.ndarray:
    """log P(s_t | its context) of every counted token, in order: (N,) with `prefix_id`,
    (N - 1,) without. `stride` defaults to the window (disjoint windows)."""
    seq = [int(i) for i in ids]
    if prefix_id is not None:
        seq = [int(prefix_id)] + seq
    limit = getattr(model, "block_size", None)
    if limit is not None and window > int(limit):
        raise ValueError(f"rolling_loglikelihood: window {window} is longer than the model's "
                         f"block_size {limit}")
    spans = rolling_windows(len(seq), window, window if stride is None else stride)
    s = np.asarray(seq, dtype=np.int64)
    out = []
    with evaluating(model):
        for a, b, n_new in spans:
            logits, _ = model(s[None, a:b])
            logp = _log_softmax(as_array(logits)[0, -n_new:])         # (n_new, V)
            targets = s[b - n_new + 1:b + 1]
            out.append(logp[np.arange(n_new), targets])
    return np.concatenate(out)


@dataclass(frozen=True)
class RollingReport:
    """A document's rolling score in the units of the module docstring."""

    total_nll: float
    n_tokens: int
    n_bytes: int
    n_words: int
    token_perplexity: float
    bits_per_byte: float
    word_perplexity: float

    def as_dict(self) -> dict:
        return asdict(self)


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def rolling_report(logprobs: Sequence[float], text: str) -> RollingReport:
    """Turn the counted tokens' log-probabilities and the text they spell into a report."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.size == 0:
        raise ValueError("rolling_report: no scored tokens")
    n_bytes = len(text.encode("utf-8"))
    n_words = len(re.findall(r"\S+", text))
    if n_bytes == 0:
        raise ValueError("rolling_report: the scored text is empty")
    total = float(-lp.sum())
    return RollingReport(total, int(lp.size), n_bytes, n_words, _exp(total / lp.size),
                         total / (n_bytes * math.log(2)),
                         _exp(total / n_words) if n_words else math.inf)
