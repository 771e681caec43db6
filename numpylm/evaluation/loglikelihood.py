"""Scoring by log-likelihood, part 4 of the guide: how multiple-choice benchmarks (HellaSwag,
ARC, MMLU) are scored without the model writing anything. Each choice is a continuation of
the question, and the model's answer is the choice it finds most probable.

The definitions are lm-evaluation-harness's, because they decide the number:

1. **Tokenising a (context, continuation) pair** (`encode_pair`). Trailing whitespace of the
   context moves to the front of the continuation ("Answer: " + "Paris" becomes "Answer:" +
   " Paris", since BPE vocabularies glue a space to the word after it). Then the whole
   string context + continuation is encoded at once, the context alone is encoded, and the
   continuation's ids are the whole's ids after the first len(context ids): the tokens are
   those the model would see in running text, and the boundary is where the context's own
   encoding ends. An empty context is replaced by the end-of-text id, so that the first
   continuation token has something to be predicted from.
2. **The log-likelihood** of a continuation c_1..c_m after context ids x is
   sum_j log P(c_j | x, c_1..c_{j-1}), and it is **greedy** when every c_j is the argmax of
   its distribution. The model reads (x + c)[:-1], cropped on the left to its window W
   (the last W + 1 ids of x + c, minus the last), and the last m positions are scored.
3. **acc** picks argmax_i ll_i; **acc_norm** picks argmax_i ll_i / len_i, with len_i the
   length of choice i in UTF-8 bytes, which stops long choices losing only for being long.
   (The harness divides by `len(choice)` of the Python string, its characters: the same
   number for ASCII text, which every built-in task is.) Lengths count the choice text
   without the space before it.

Two ways to compute 2, proven equal by the tests:
- `score_from_scratch`: one `forward` of (x + c)[:-1] per choice: the definition as written.
- `score_shared`: step the decoding state through the context once (the KV cache of a
  transformer, the hidden state of an RNN), copy that state for each choice and step only
  the choice's tokens. The context, usually far longer than a choice, is run once instead of
  once per choice.
- `score_batched`: many questions at once. Where every choice is one token (MMLU's " A".." D"),
  the context's last logits score them all, so a question costs one run of its context; the
  contexts of many such questions run in padded batches, and what they share at the start
  (MMLU's opening sentence, a subject's name) runs once (`prefix_batch`). Other questions go
  through `score_shared`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from numpylm.evaluation.prefix_batch import last_logits
from numpylm.models.base import as_array
from numpylm.nn.module import evaluating

__all__ = ["ChoiceScore", "check_request", "encode_pair", "end_of_text_id",
           "multiple_choice_metrics", "score_batched", "score_from_scratch", "score_shared"]


@dataclass(frozen=True)
class ChoiceScore:
    """One continuation's summed log-probability (nats), whether it is the greedy
    continuation, and its number of tokens."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def end_of_text_id(tokenizer: Any) -> int | None:
    """The tokenizer's end-of-text id (`eos_id`, or GPT-2's `<|endoftext|>`), or None."""
    eos = getattr(tokenizer, "eos_id", None)
    if eos is not None:
        return int(eos)
    special = getattr(tokenizer, "special_tokens", None)
    if isinstance(special, dict) and "<|endoftext|>" in special:
        return int(special["<|endoftext|>"])
    return None


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the way lm-evaluation-harness splits them (rule 1 of
    the module docstring)."""
    if not continuation and not context[len(context.rstrip()):]:
        raise ValueError("encode_pair: the continuation is empty; there is nothing to score")
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        eot = end_of_text_id(tokenizer)
        if eot is None:
            raise ValueError("encode_pair: the context is empty and the tokenizer has no "
                             "end-of-text id to predict the first token from; give a context")
        return [eot], list(tokenizer.encode(continuation))
    whole = list(tokenizer.encode(context + continuation))
    n_context = len(tokenizer.encode(context))
    return whole[:n_context], whole[n_context:]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    top = np.max(z, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # an all -inf row stays -inf, without NaN
    with np.errstate(divide="ignore"):
        return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def _window(model: Any, max_length: int | None) -> int | None:
    limit = getattr(model, "block_size", None)
    limit = None if limit is None else int(limit)
    if max_length is not None:
        limit = int(max_length) if limit is None else min(limit, int(max_length))
    return limit


def check_request(model: Any, context: Sequence[int], continuations: Sequence[Sequence[int]],
                  max_length: int | None = None) -> None:
    """The errors the scoring functions raise for this (context, continuations), raised
    before any scoring: an empty context or choice, a choice longer than the window."""
    _check(context, continuations, _window(model, max_length))


def _check(context: Sequence[int], continuations: Sequence[Sequence[int]],
           limit: int | None) -> None:
    if len(context) == 0:
        raise ValueError("loglikelihood: the context has no tokens (encode_pair puts the "
                         "end-of-text id there when the text is empty)")
    for i, c in enumerate(continuations):
        if len(c) == 0:
            raise ValueError(f"loglikelihood: continuation {i} has no tokens")
        if limit is not None and len(c) > limit:
            raise ValueError(f"loglikelihood: continuation {i} has {len(c)} tokens, more than "
                             f"the model's window of {limit}")


def _score(logprobs: np.ndarray, targets: Sequence[int]) -> ChoiceScore:
    """logprobs (m, V) of the positions that predict targets (m,)."""
    t = np.asarray(targets, dtype=np.int64)
    picked = logprobs[np.arange(len(t)), t]
    return ChoiceScore(float(picked.sum()), bool((logprobs.argmax(axis=-1) == t).all()), len(t))


def score_from_scratch(model: Any, context: Sequence[int],
                       continuations: Sequence[Sequence[int]],
                       max_length: int | None = None) -> list[ChoiceScore]:
    """Each continuation's `ChoiceScore` after `context` (ids), by one `forward` per choice
    on (context + continuation)[:-1], cropped on the left to the model's window."""
    limit = _window(model, max_length)
    _check(context, continuations, limit)
    scores = []
    with evaluating(model):
        for cont in continuations:
            whole = list(context) + list(cont)
            inputs = whole[-(limit + 1):][:-1] if limit is not None else whole[:-1]
            logits, _ = model(np.asarray([inputs], dtype=np.int64))
            logits = as_array(logits)[0, -len(cont):]          # (m, V)
            scores.append(_score(_log_softmax(logits), cont))
    return scores


def score_shared(model: Any, context: Sequence[int], continuations: Sequence[Sequence[int]],
                 max_length: int | None = None) -> list[ChoiceScore]:
    """The same numbers as `score_from_scratch`, with the context run once through the
    decoding state and the state copied for each choice.

    A choice whose context must be cropped to fit the window (a long context, a long choice)
    sees a different context from the others, so choices are grouped by where their context
    starts, and each group shares one run of its context.
    """
    limit = _window(model, max_length)
    _check(context, continuations, limit)
    groups: dict[int, list[int]] = {}
    for i, cont in enumerate(continuations):
        start = 0 if limit is None else max(0, len(context) + len(cont) - 1 - limit)
        groups.setdefault(start, []).append(i)
    scores: list[ChoiceScore | None] = [None] * len(continuations)
    with evaluating(model):
        for start, members in groups.items():
            state = model.init_state(1)
            first = model.step(state, np.asarray([context[start:]], dtype=np.int64))  # (1, V)
            for k, i in enumerate(members):
                rows = [np.asarray(first[0], dtype=np.float64)]
                if len(continuations[i]) > 1:
                    # The last choice of a group may take the state itself: nothing reads it
                    # after. A one-token choice needs only the context's logits, no copy.
                    own = state if k == len(members) - 1 else copy.deepcopy(state)
                for token in continuations[i][:-1]:
                    rows.append(np.asarray(model.step(own, np.asarray([[token]]))[0]))
                scores[i] = _score(_log_softmax(np.stack(rows)), continuations[i])
    return scores  # type: ignore[return-value]


def score_batched(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                  max_length: int | None = None, batch_tokens: int = 1024,
                  share_prefixes: bool = True) -> list[list[ChoiceScore]]:
    """`score_shared` of each (context, continuations) request, the same numbers (up to
    float rounding: a padded batch sums in another order).

    A request whose choices are all one token needs only the logits after its context
    (cropped to the window's last W ids, as rule 2 crops it): those contexts run together
    through `prefix_batch.last_logits`, in padded batches, each prefix they share run once
    (`share_prefixes`). Other requests are scored one by one by `score_shared`.
    """
    limit = _window(model, max_length)
    for context, continuations in requests:
        _check(context, continuations, limit)
    scores: list[list[ChoiceScore] | None] = [None] * len(requests)
    single = [r for r, (_, conts) in enumerate(requests) if all(len(c) == 1 for c in conts)]
    with evaluating(model):
        rows = [list(requests[r][0][-limit:] if limit is not None else requests[r][0])
                for r in single]
        if rows:
            logprobs = _log_softmax(last_logits(model, rows, batch_tokens, share_prefixes))
            for i, r in enumerate(single):
                scores[r] = [_score(logprobs[i:i + 1], c) for c in requests[r][1]]
    for r, (context, continuations) in enumerate(requests):
        if scores[r] is None:
            scores[r] = score_shared(model, context, continuations, max_length)
    return scores  # type: ignore[return-value]


def multiple_choice_metrics(logprobs: Sequence[float], choices: Sequence[str],
                            gold: int) -> dict[str, float]:
    """acc and acc_norm (rule 3 of the module docstring) of one question, each 1.0 or 0.0.

    Ties go to the first choice, as `np.argmax` breaks them.
    """
    lls = np.asarray(logprobs, dtype=np.float64)
    if lls.shape != (len(choices),):
        raise ValueError(f"multiple_choice_metrics: {lls.size} log-likelihoods for "
                         f"{len(choices)} choices")
    if not 0 <= gold < len(choices):
        raise ValueError(f"multiple_choice_metrics: gold {gold} is outside the "
                         f"{len(choices)} choices")
    lengths = np.array([max(len(c.encode("utf-8")), 1) for c in choices], dtype=np.float64)
    return {"acc": float(np.argmax(lls) == gold),
            "acc_norm": float(np.argmax(lls / lengths) == gold)}
