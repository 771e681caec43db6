"""Running a model over held-out text, part 4 of the guide: the mean negative log-likelihood
behind every metric in `metrics.py`, computed two ways.

- `numpylm.training.estimate_loss` averages the loss of a fixed number of *random* (B, T)
  windows. It is quick and is what training logs print (and what nanoGPT reports), but it
  is an estimate.
- `evaluate_ids` scores *every* token of the text exactly once: the ids are cut into
  consecutive windows of T + 1 tokens overlapping by one, so each window predicts T new tokens.
  The first token of each window is predicted from a short context, which makes this a slightly
  pessimistic but exact and repeatable number.

Both run the model in eval mode (no dropout) without recording a graph, and put it back in the
mode they found it in. Any model with the shared `forward(idx, targets) -> (logits, loss)`
interface works; a count n-gram model (which has `token_logprobs`) is scored from its counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from numpylm.evaluation.metrics import bits_per_byte, bits_per_char, bits_per_token, perplexity
from numpylm.nn.module import evaluating

__all__ = ["EvalReport", "evaluate_ids", "evaluate_text", "evaluate_tokens",
           "report_from_nll"]


def _loss_value(model, x: np.ndarray, y: np.ndarray) -> float:
    _, loss = model(x, y)
    return float(loss.item())


def evaluate_ids(model, ids: np.ndarray, block_size: int,
                 batch_size: int = 16) -> tuple[float, int]:
    """(mean NLL in nats, number of predicted tokens) over every token of `ids` after the first."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"need a 1-D array of at least 2 ids to evaluate, got shape {ids.shape}")
    if hasattr(model, "token_logprobs"):
        # A count model scores the whole text as one sequence; drop the end-of-sequence
        # prediction it appends so that it, too, predicts exactly len(ids) - 1 tokens.
        logp = model.token_logprobs([ids])[1:-1]
        return float(-logp.mean()), len(logp)
    T = block_size
    n_full = (len(ids) - 1) // T                         # windows of T predictions
    total_nll, count = 0.0, 0
    with evaluating(model):
        starts = np.arange(n_full) * T
        for b in range(0, n_full, batch_size):
            window = starts[b:b + batch_size, None] + np.arange(T)   # (B, T)
            n = window.size
            total_nll += _loss_value(model, ids[window], ids[window + 1]) * n
            count += n
        rest = len(ids) - 1 - n_full * T                 # the short last window
        if rest:
            s = n_full * T
            x, y = ids[None, s:s + rest], ids[None, s + 1:s + rest + 1]
            total_nll += _loss_value(model, x, y) * rest
            count += rest
    return total_nll / count, count


@dataclass
class EvalReport:
    """A model's score on one text, in every unit of `metrics.py`."""

    loss: float
    perplexity: float
    bits_per_token: float
    bits_per_char: float
    bits_per_byte: float
    n_tokens: int
    n_chars: int
    n_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"loss {self.loss:.4f} nats/token | perplexity {self.perplexity:.2f} | "
                f"{self.bits_per_token:.4f} bits/token | {self.bits_per_char:.4f} bits/char | "
                f"{self.bits_per_byte:.4f} bits/byte | {self.n_tokens} tokens, "
                f"{self.n_chars} chars, {self.n_bytes} bytes")


def report_from_nll(mean_nll: float, n_tokens: int, n_chars: int, n_bytes: int) -> EvalReport:
    """Convert a mean NLL over `n_tokens` tokens of a text into an `EvalReport`."""
    if not math.isfinite(mean_nll):
        return EvalReport(mean_nll, math.inf, math.inf, math.inf, math.inf, n_tokens, n_chars,
                          n_bytes)
    return EvalReport(mean_nll, perplexity(mean_nll), bits_per_token(mean_nll),
                      bits_per_char(mean_nll, n_tokens, n_chars),
                      bits_per_byte(mean_nll, n_tokens, n_bytes), n_tokens, n_chars, n_bytes)


def evaluate_text(model, tokenizer, text: str, block_size: int, batch_size: int = 16) -> EvalReport:
    """Score `text` with `model`; bits per char/byte count the characters and bytes of the
    tokens actually predicted (all but the first token)."""
    return evaluate_tokens(model, tokenizer, tokenizer.encode(text), block_size, batch_size)


def evaluate_tokens(model, tokenizer, ids, block_size: int, batch_size: int = 16) -> EvalReport:
    """`evaluate_text` for text that is already token ids."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(f"the text gives {len(ids)} token(s); need at least 2 to evaluate")
    mean_nll, n = evaluate_ids(model, ids, block_size, batch_size)
    predicted = tokenizer.decode(ids[1:].tolist())
    return report_from_nll(mean_nll, n, len(predicted), len(predicted.encode("utf-8")))
