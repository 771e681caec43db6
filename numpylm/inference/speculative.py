"""Speculative decoding, part 3 of the guide: a cheap draft guesses several tokens, the big
target model checks them all in one call, and the output is exactly what the target alone
would have produced (Leviathan et al. 2023; Chen et al. 2023).

One round, with the target's distributions p_1..p_{k+1} and the draft's q_1..q_k:
1. the draft proposes d_1..d_k, one step each (cheap);
2. the target is fed d_1..d_k in **one** call over its KV cache, which gives p_i, its
   distribution after d_1..d_{i-1}, for all k + 1 positions at about the price of one token
   (a step is bound by reading the weights, not by the few extra positions);
3. left to right, d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); at the first
   rejection the round ends with a token drawn from norm(max(0, p_i - q_i)) instead; if all k
   are accepted, a bonus token is drawn from p_{k+1};
4. both models are rewound past the rejected drafts (`numpylm.inference.rewind`).

Why the output distribution is exactly p: the first emitted token is x with probability
    q(x) min(1, p(x)/q(x)) + P(reject) * max(0, p(x) - q(x)) / Z
  = min(q(x), p(x)) + max(0, p(x) - q(x))        (P(reject) = 1 - sum min(p, q) = Z)
  = p(x),
and each later token is the same argument conditioned on the ones before. Greedy decoding is
the case where p and q put all their mass on their argmax: a draft is accepted exactly when it
is the target's argmax, and the rejection draws the target's argmax, so the output is token for
token the target's own greedy output.

The draft is another model sharing the target's vocabulary, of any family (a small GRU can
draft for a transformer: what counts is how often it guesses the target's token and how little
its step costs), or, with no draft model, **prompt
lookup** (Saxena 2023): find the latest earlier occurrence of the context's last n ids (n from
`lookup_ngram` down to 1) and propose the k ids that followed it. It costs nothing and shines
when the output copies its input (editing, summarising, code). Its q is one-hot on its guess,
so the same verifier applies.

Each round emits between 1 and k + 1 tokens for one target call, so the speed-up over plain
decoding is about (tokens per round) / (1 + k * cost(draft step) / cost(target step)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from numpylm.inference.generate import _as_prompts, _crop, context_limit
from numpylm.inference.rewind import Cursor
from numpylm.inference.sampling import SamplingParams, draw
from numpylm.nn.module import evaluating

__all__ = ["SpeculativeResult", "accept_greedy", "accept_sampled", "lookup_draft",
           "speculative_generate"]


def accept_greedy(p: np.ndarray, drafts: Sequence[int]) -> tuple[int, int]:
    """(how many drafts the target accepts, the token that ends the round) when both decode
    greedily: p (k + 1, V) are the target's scores at the k + 1 positions."""
    best = np.asarray(p).argmax(axis=-1)
    for i, d in enumerate(drafts):
        if best[i] != d:
            return i, int(best[i])
    return len(drafts), int(best[len(drafts)])


def accept_sampled(p: np.ndarray, q: np.ndarray, drafts: Sequence[int],
                   rng: np.random.Generator) -> tuple[int, int]:
    """The modified rejection rule: p (k + 1, V) the target's probabilities, q (k, V) the
    draft's, `drafts` the k proposed ids (each drawn from its row of q). Returns (accepted
    count n, the token that ends the round), distributed as if drawn from p one at a time."""
    for i, d in enumerate(drafts):
        # Accept with probability min(1, p/q): u < p/q, written without dividing by q.
        if rng.random() * q[i, d] < p[i, d]:
            continue
        residual = np.maximum(p[i] - q[i], 0.0)  # norm(max(0, p - q))
        total = residual.sum()
        # A rejection implies p(d) < q(d), so some other token has p > q and total > 0;
        # only rounding could make it 0, and then p itself is the right distribution.
        residual = residual / total if total > 0 else p[i]
        return i, int(draw(residual[None, :], rng)[0])
    return len(drafts), int(draw(p[len(drafts)][None, :], rng)[0])


def lookup_draft(tokens: Sequence[int], k: int, max_ngram: int = 3) -> list[int]:
    """Prompt lookup: up to k ids that followed the latest earlier occurrence of the last n ids
    of `tokens` (the longest n <= max_ngram that occurs), or [] when none recurs."""
    seq = list(tokens)
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        tail = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):  # latest occurrence first
            if seq[start:start + n] == tail:
                return seq[start + n:start + n + k]
    return []


@dataclass
class SpeculativeResult:
    """The tokens of a speculative run and what it cost.

    `ids`: prompt + new tokens (as `generate` returns); `new_tokens`: how many are new;
    `drafted`/`accepted`: draft tokens proposed and kept; `rounds`: target verification calls
    after the prompt; `target_calls` and `draft_calls`: step calls made to each model (prompt
    included; a model scored one token at a time makes one call per token).
    """

    ids: np.ndarray
    new_tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    target_calls: int = 0
    draft_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        """The fraction of drafted tokens the target kept (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target verification (plain decoding: 1)."""
        return self.new_tokens / self.rounds if self.rounds else 0.0


def _check_models(target: Any, draft: Any, k: int, lookup_ngram: int) -> None:
    for name, model in (("target", target), ("draft", draft)):
        if model is not None and not (hasattr(model, "init_state") and hasattr(model, "step")):
            raise ValueError(f"speculative_generate: the {name} model has no decoding state "
                             f"(init_state/step); every numpylm family has one")
    if draft is not None and draft.vocab_size != target.vocab_size:
        raise ValueError(f"speculative_generate: draft's vocab_size {draft.vocab_size} differs "
                         f"from target's {target.vocab_size}; they must share one vocabulary")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"speculative_generate: k (tokens drafted per round) must be an "
                         f"integer >= 1, got {k!r}")
    if not isinstance(lookup_ngram, (int, np.integer)) or lookup_ngram < 1:
        raise ValueError(f"speculative_generate: lookup_ngram must be an integer >= 1, "
                         f"got {lookup_ngram!r}")


def speculative_generate(target: Any, prompt: Any, max_new_tokens: int, draft: Any = None, *,
                         k: int = 4, sampling: SamplingParams | None = None,
                         lookup_ngram: int = 3,
                         confidence_threshold: float = 0.0) -> SpeculativeResult:
    """Continue one `prompt` (1-D ids) by up to `max_new_tokens` tokens of `target`, drafted
    by the model `draft` (same vocabulary) or, when `draft` is None, by prompt lookup.

    `sampling` is as for `generate` (default: greedy, which gives exactly `generate`'s greedy
    tokens); the output has the target's distribution under those settings, processors
    included. A row ends after its first stop token.

    `k` is the most tokens a round drafts. With `confidence_threshold` in (0, 1] (HF's
    `assistant_confidence_threshold`), a draft model stops a round early, after a token it
    gave a probability below the threshold (its argmax's probability when greedy): such a
    guess is often wrong, and every draft after a wrong one is wasted work, a draft step
    each and a position for the target to check. The round's length then depends only on the
    draft's own tokens, so the output is unchanged in distribution (greedy: token for token).
    """
    params = sampling if sampling is not None else SamplingParams(temperature=0.0)
    if not isinstance(params, SamplingParams):
        raise TypeError(f"sampling must be a SamplingParams, got {type(params).__name__}")
    _check_models(target, draft, k, lookup_ngram)
    if isinstance(confidence_threshold, bool) or not isinstance(
            confidence_threshold, (int, float, np.integer, np.floating)) or not (
            0.0 <= confidence_threshold <= 1.0):
        raise ValueError(f"speculative_generate: confidence_threshold must be a number in "
                         f"[0, 1] (0: never stop a round early), got {confidence_threshold!r}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"speculative_generate: max_new_tokens must be an integer >= 0, "
                         f"got {max_new_tokens!r}")
    prompts, single = _as_prompts(prompt, allow_empty=False)
    if not single:
        raise ValueError("speculative_generate: give one prompt (a 1-D sequence of ids); "
                         "it decodes one sequence at a time")
    full = [int(t) for t in prompts[0]]
    rng = params.rng()
    with evaluating(target), (evaluating(draft) if draft is not None else _nothing()):
        cropped = [int(t) for t in _crop(prompts, context_limit(target))[0]]
        tcur = Cursor(target, cropped)
        dcur = None
        if draft is not None:
            dcur = Cursor(draft, [int(t) for t in _crop(prompts, context_limit(draft))[0]])
        result = SpeculativeResult(np.zeros(0, np.int64))
        new = _decode(tcur, dcur, full, max_new_tokens, k, lookup_ngram, params, rng, result,
                      confidence_threshold)
    result.ids = np.asarray(full + new, dtype=np.int64)
    result.new_tokens = len(new)
    result.target_calls = tcur.calls
    result.draft_calls = dcur.calls if dcur is not None else 0
    return result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _processed(params: SamplingParams, logits: np.ndarray, context: list[int],
               tokens: Sequence[int], n_new: int) -> np.ndarray:
    """Logits rows (T, V) after the processors, row t seeing the context followed by
    tokens[:t] (penalties depend on it)."""
    if not params.processes:
        return logits
    contexts = [context + list(tokens[:t]) for t in range(len(logits))]
    return params.process(logits, contexts, [n_new + t for t in range(len(logits))])


def _distributions(params: SamplingParams, logits: np.ndarray, context: list[int],
                   tokens: Sequence[int], n_new: int) -> np.ndarray:
    """The sampling distributions (T, V) of logits rows (T, V), processed as above."""
    return params.distribution(_processed(params, logits, context, tokens, n_new))


def _decode(tcur: Cursor, dcur: Cursor | None, full: list[int], max_new: int, k: int,
            lookup_ngram: int, params: SamplingParams, rng: np.random.Generator,
            result: SpeculativeResult, confidence_threshold: float) -> list[int]:
    new: list[int] = []
    base_t = len(tcur.tokens)  # cursor lengths where the output starts
    base_d = len(dcur.tokens) if dcur is not None else 0
    stops = set(params.stop_tokens)
    while len(new) < max_new:
        kk = min(k, max_new - len(new) - 1)  # a round emits up to kk + 1 tokens
        context = full + new
        drafts, q = _propose(dcur, base_d, new, context, kk, lookup_ngram, params, rng,
                             confidence_threshold)
        pending = new[len(tcur.tokens) - base_t:]  # emitted, not yet fed to the target
        tcur.mark(len(pending) + len(drafts))
        before = tcur.logits
        rows = tcur.feed(pending + drafts)
        p_logits = np.concatenate([before[None, :], rows])[-(len(drafts) + 1):]
        if params.greedy:  # only the argmax matters: no distributions to build
            n, token = accept_greedy(_processed(params, p_logits, context, drafts, len(new)),
                                     drafts)
        else:
            p = _distributions(params, p_logits, context, drafts, len(new))
            if dcur is None:  # prompt lookup is certain of its guesses: q is one-hot
                q = np.eye(p.shape[-1])[np.asarray(drafts, dtype=np.int64)]
            n, token = accept_sampled(p, q, drafts, rng)
        result.rounds += 1
        result.drafted += len(drafts)
        result.accepted += n
        emitted = drafts[:n] + [token]
        for t in emitted:
            new.append(t)
            if t in stops or len(new) == max_new:
                return new
        tcur.rewind(base_t + len(new) - 1)  # everything but the newest token is fed
        if dcur is not None:
            dcur.rewind(min(len(dcur.tokens), base_d + len(new) - 1))
    return new


def _propose(dcur: Cursor | None, base_d: int, new: list[int], context: list[int], kk: int,
             lookup_ngram: int, params: SamplingParams, rng: np.random.Generator,
             confidence_threshold: float) -> tuple[list[int], np.ndarray]:
    """(up to kk draft ids, their draft distributions q, one-hot for prompt lookup); a draft
    model stops early after a guess it gave less than `confidence_threshold`."""
    if dcur is None:
        drafts = lookup_draft(context, kk, lookup_ngram) if kk else []
        return drafts, np.zeros((len(drafts), 0))  # q: one-hot, made by the caller
    pending = new[len(dcur.tokens) - base_d:]
    dcur.mark(len(pending) + kk)
    dcur.feed(pending)
    drafts, rows = [], []
    for i in range(kk):
        if params.greedy:  # the draft's argmax; q is not needed
            scores = _processed(params, dcur.logits[None, :], context + drafts, [],
                                len(new) + i)[0]
            d = int(scores.argmax())
            if confidence_threshold:  # softmax(scores)[d], d being the largest score
                probability = 1.0 / float(np.exp(scores - scores[d]).sum())
        else:
            q = _distributions(params, dcur.logits[None, :], context + drafts, [],
                               len(new) + i)[0]
            d = int(draw(q[None, :], rng)[0])
            probability = float(q[d])
            rows.append(q)
        drafts.append(d)
        if i < kk - 1:
            if confidence_threshold and probability < confidence_threshold:
                break  # the draft doubts this guess: later ones would likely be wasted
            dcur.feed([d])
    return drafts, np.asarray(rows)
