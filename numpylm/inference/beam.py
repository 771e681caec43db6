"""Beam search, part 3 of the guide: instead of committing to one token at a time, keep the
`num_beams` most likely partial sequences and extend them all (with the semantics of HF
transformers' `generate(num_beams=...)`, so the same model gives the same beams).

A sequence's score is the sum of its tokens' log-probabilities, log p(y) = sum_t log p(y_t |
y_<t). Each step:
1. every running beam b is extended by every token v: score(b) + log p(v | b), num_beams * V
   candidates, of which the best K = max(2, 1 + number of EOS ids) * num_beams are kept (more
   than num_beams, so that enough stay running when some of the best end);
2. a candidate ending in an EOS id, or reaching `max_new_tokens`, is *finished*: if it is among
   the best num_beams candidates it competes for a place among the num_beams finished
   hypotheses with the length-normalised score
       score / (new tokens) ** length_penalty
   (length_penalty > 0 favours longer sequences: log-probabilities are negative);
3. the best num_beams unfinished candidates run on (each one's decoding state is a copy of its
   parent's row, `numpylm.models.decoding.select_rows`).
The search stops when every step has hit `max_new_tokens`, or when the finished hypotheses
cannot be beaten: with `early_stopping=True`, as soon as num_beams are finished; with False (HF's
default), when the best running beam's score divided by its current length ** length_penalty
is no better than the worst finished one; with "never", the same test with the longest
possible length when length_penalty > 0 (the canonical search, never stopping early wrongly).

The logit processors of `SamplingParams` (penalties, bans) apply to the log-probabilities, as
in HF; the temperature and filters play no part (beam search does not sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from numpylm.inference.generate import _as_prompts, _crop, context_limit
from numpylm.inference.logprobs import log_softmax
from numpylm.inference.sampling import SamplingParams
from numpylm.models.decoding import select_rows
from numpylm.nn.module import evaluating

__all__ = ["Beam", "beam_search"]

_BLOCKED = -1.0e9  # HF's score for a candidate that may not be chosen


@dataclass(frozen=True)
class Beam:
    """A finished hypothesis: prompt + new ids, and its length-normalised score (HF's
    `sequences_scores`)."""

    ids: np.ndarray
    score: float


def _check(model: Any, num_beams: int, length_penalty: float, early_stopping: Any,
           max_new_tokens: int, eos: Sequence[int]) -> None:
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"beam_search: num_beams must be an integer >= 1, got {num_beams!r}")
    if not isinstance(length_penalty, (int, float)) or not np.isfinite(length_penalty):
        raise ValueError(f"beam_search: length_penalty must be a finite number, "
                         f"got {length_penalty!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"beam_search: early_stopping must be True, False or 'never', "
                         f"got {early_stopping!r}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"beam_search: max_new_tokens must be an integer >= 1, "
                         f"got {max_new_tokens!r}")
    if any(not 0 <= t < model.vocab_size for t in eos):
        raise ValueError(f"beam_search: eos_token_ids {list(eos)} must lie in "
                         f"[0, {model.vocab_size})")


def beam_search(model: Any, prompt: Any, max_new_tokens: int, num_beams: int = 4, *,
                length_penalty: float = 1.0, early_stopping: bool | str = False,
                eos_token_ids: Sequence[int] = (),
                sampling: SamplingParams | None = None) -> list[Beam]:
    """The `num_beams` best hypotheses continuing one `prompt` (1-D ids), best first.

    Arguments as HF's `generate(num_beams=..., length_penalty=..., early_stopping=...,
    eos_token_id=..., max_new_tokens=...)`; `sampling` carries the logit processors (its
    stop tokens are used as EOS ids when `eos_token_ids` is empty).
    """
    params = sampling if sampling is not None else SamplingParams(temperature=0.0)
    eos = tuple(int(t) for t in (eos_token_ids or params.stop_tokens))
    _check(model, num_beams, length_penalty, early_stopping, max_new_tokens, eos)
    prompts, single = _as_prompts(prompt, allow_empty=False)
    if not single:
        raise ValueError("beam_search: give one prompt (a 1-D sequence of ids)")
    full = [int(t) for t in prompts[0]]
    with evaluating(model):
        state = model.init_state(num_beams)
        start = np.tile(_crop(prompts, context_limit(model))[0], (num_beams, 1))
        logits = np.asarray(model.step(state, start))  # (nb, V)
        return _search(model, state, logits, full, max_new_tokens, num_beams, length_penalty,
                       early_stopping, eos, params)


def _search(model, state, logits, prompt: list[int], max_new: int, nb: int, lp: float,
            early_stopping, eos: tuple[int, ...], params: SamplingParams) -> list[Beam]:
    V = logits.shape[-1]
    K = max(2, 1 + len(eos)) * nb
    running = [list(prompt) for _ in range(nb)]
    # Only the first beam is live at first, so the nb copies of the prompt do not all pick
    # the same best token.
    run_scores = np.full(nb, _BLOCKED)
    run_scores[0] = 0.0
    fin: list[list[int]] = [list(prompt)] * nb
    fin_scores = np.full(nb, _BLOCKED)
    fin_flags = np.zeros(nb, dtype=bool)
    improvable = True
    for step in range(max_new):
        logp = params.process(log_softmax(logits), running, step)  # (nb, V)
        total = (logp + run_scores[:, None]).ravel()
        order = np.argsort(-total, kind="stable")[:K]  # best first; ties: lowest index
        top, parent, token = total[order], order // V, order % V
        hits = np.isin(token, eos) | (step + 1 == max_new)
        candidates = [running[b] + [int(t)] for b, t in zip(parent, token)]
        # Finished candidates among the best nb compete for the finished places.
        normalised = top / float(step + 1) ** lp
        blocked = ~(hits & (np.arange(K) < nb))
        if (fin_flags.all() and early_stopping is True) or not improvable:
            blocked[:] = True
        merged = np.concatenate([fin_scores, normalised + blocked * _BLOCKED])
        keep = np.argsort(-merged, kind="stable")[:nb]
        fin = [(fin + candidates)[i] for i in keep]
        fin_scores = merged[keep]
        fin_flags = np.concatenate([fin_flags, ~blocked])[keep]
        # The best nb unfinished candidates run on.
        live = top + hits * _BLOCKED
        chosen = np.argsort(-live, kind="stable")[:nb]
        running = [candidates[i] for i in chosen]
        run_scores = live[chosen]
        improvable = improvable and _can_improve(run_scores[0], fin_scores, fin_flags, step + 1,
                                                 max_new, lp, early_stopping)
        if not improvable or (fin_flags.all() and early_stopping is True) or hits.all():
            break
        select_rows(state, parent[chosen])
        logits = np.asarray(model.step(state, token[chosen][:, None]))
    return [Beam(np.asarray(ids, dtype=np.int64), float(score))
            for ids, score, done in zip(fin, fin_scores, fin_flags) if done]


def _can_improve(best_running: float, fin_scores: np.ndarray, fin_flags: np.ndarray,
                 length: int, max_new: int, lp: float, early_stopping) -> bool:
    """Whether the best running beam could still beat the worst finished hypothesis (HF's
    heuristic: see the module docstring)."""
    longest = max_new if early_stopping == "never" and lp > 0 else length
    best_possible = best_running / float(longest) ** lp
    worst = np.where(fin_flags, fin_scores.min(), _BLOCKED)
    return bool((best_possible > worst).any())
