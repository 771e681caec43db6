"""The serving engine, part 3 of the guide: one model, a paged KV cache and a continuous-batching
scheduler, turned into a loop that takes requests and gives back tokens as they come.

Each `step()`:
1. asks the scheduler which sequences feed how many tokens (`numpylm.serving.scheduler`);
2. runs the model once over all of them, in one of two ways (`kernel`):
   - "paged" (Llama models, the default for them): every sequence's new tokens as the rows of
     one ragged batch, one matrix product per weight for the whole step, attention read in
     place from the pool (`numpylm.serving.forward`);
   - "gather" (any GPT or Llama, the readable route): for the decoding sequences together,
     and for each prompt chunk on its own, copy their cached keys and values out of the pool
     into one left-padded batch (`PagedKVCache.gather_batch`), a contiguous `KVCache` the
     model's own inference stepper (`gpt_inference` or `llama_inference.forward_logits`)
     appends the new tokens to, exactly the left padding of `numpylm.models.decoding`; then
     write the new keys and values back into each sequence's blocks. That copy of every
     cached key, every step, is what "paged" avoids: at 16 sequences it cost more than the
     weights (benchmarks/bench_serving.py);
3. samples one token for each sequence whose pending tokens are all read, with its own
   `SamplingParams` and its own random generator.

Because a request's tokens are drawn from its own generator, from its own row of logits, and a
row's logits do not depend on the other rows (padding is masked out), a seeded request gives the
same tokens alone or in a busy batch, and a greedy one gives `generate`'s tokens (tested).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from numpylm.inference.logprobs import TokenLogprob, token_logprobs
from numpylm.inference.sampling import SamplingParams
from numpylm.models.kv_cache import KVCache
from numpylm.serving.forward import forward_paged, supports_paged
from numpylm.serving.paged_cache import PagedKVCache
from numpylm.serving.scheduler import Scheduler, SequenceState

__all__ = ["Engine", "TokenEvent", "stepper_for"]


@dataclass
class TokenEvent:
    """One new token of a request, and whether (and why: "stop" or "length") it was the last;
    with `logprob` when the request asked for log-probabilities."""

    request_id: Hashable
    token: int
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None


def stepper_for(model: Any) -> Callable[..., np.ndarray]:
    """The plain-numpy `forward_logits(model, ids, positions, kv_cache, attn_mask, last_only)`
    of a transformer family (GPT or Llama); a ValueError for a model without one."""
    from numpylm.models.gpt import GPT
    from numpylm.models.llama import Llama

    if isinstance(model, Llama):
        from numpylm.models import llama_inference
        return llama_inference.forward_logits
    if isinstance(model, GPT):
        from numpylm.models import gpt_inference
        return gpt_inference.forward_logits
    raise ValueError(f"Engine: serving needs a transformer with a KV cache (GPT or Llama), "
                     f"got {type(model).__name__}")


class _Request:
    """What the engine keeps with a sequence: its sampling settings and generator, and how
    many alternatives to report with each token's log-probability (None: no logprobs)."""

    def __init__(self, sampling: SamplingParams, logprobs: int | None) -> None:
        self.sampling, self.rng, self.logprobs = sampling, sampling.rng(), logprobs


class Engine:
    """Continuous batching over a paged KV cache for a GPT or Llama `model`.

    `num_blocks` blocks of `page_size` tokens make the pool (default: room for `max_running`
    sequences of the full context, or of 2048 tokens if less); `max_running` sequences run
    at once, `max_tokens_per_step` tokens are fed per step. `kernel` is "paged" (Llama only;
    the default for it) or "gather" (the default for GPT), see the module's docstring. With
    `share_prefixes`, a prompt that begins like one already in the pool reuses its blocks
    (`PagedKVCache.share`; `engine.cache.prefix_hits` counts them).
    `add_request` queues a prompt; `step` runs the model once and returns the new tokens;
    `abort` cancels a request and frees its blocks.
    """

    def __init__(self, model: Any, *, num_blocks: int | None = None, page_size: int = 16,
                 max_running: int = 16, max_tokens_per_step: int = 256,
                 kernel: str | None = None, share_prefixes: bool = False) -> None:
        self.model = model
        self.forward_logits = stepper_for(model)
        if kernel is None:
            kernel = "paged" if supports_paged(model) else "gather"
        if kernel not in ("paged", "gather") or (kernel == "paged" and not supports_paged(model)):
            raise ValueError(f"Engine: kernel must be 'gather', or 'paged' for a Llama model; "
                             f"got {kernel!r} for {type(model).__name__}")
        self.kernel = kernel
        probe = model.init_kv_cache(1, 1)  # (n_layer, 1, Hkv, 1, D): the cache's geometry
        n_layer, _, n_kv, _, D = probe.k.shape
        self.context = int(model.block_size)
        if num_blocks is None:  # room for max_running sequences of up to 2048 tokens
            num_blocks = max_running * -(-min(self.context, 2048) // page_size)
        self.cache = PagedKVCache(n_layer, n_kv, D, num_blocks, page_size, dtype=probe.k.dtype,
                                  share_prefixes=share_prefixes)
        self.scheduler = Scheduler(self.cache, max_running, max_tokens_per_step)
        self.sequences: dict[Hashable, SequenceState] = {}
        self._ids = itertools.count()
        self.steps = 0

    def add_request(self, prompt: Sequence[int], max_new_tokens: int,
                    sampling: SamplingParams | None = None,
                    request_id: Hashable | None = None, logprobs: int | None = None
                    ) -> Hashable:
        """Queue `prompt` (token ids) for up to `max_new_tokens` new tokens; its id. With
        `logprobs` = k (0 to 20) every token's event carries its log-probability and its k
        most likely alternatives (`numpylm.inference.logprobs`)."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("Engine: the prompt is empty; give at least one token")
        V = self.model.vocab_size
        if any(not 0 <= t < V for t in prompt):
            raise ValueError(f"Engine: prompt token ids must be in [0, {V})")
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"Engine: max_new_tokens must be a positive integer, "
                             f"got {max_new_tokens!r}")
        if len(prompt) >= self.context:
            raise ValueError(f"Engine: the prompt has {len(prompt)} tokens; the model's "
                             f"context is {self.context}, leaving no room for an answer")
        if logprobs is not None and (isinstance(logprobs, bool) or
                                     not isinstance(logprobs, (int, np.integer)) or
                                     not 0 <= logprobs <= 20):
            raise ValueError(f"Engine: logprobs must be None or an integer in [0, 20], "
                             f"got {logprobs!r}")
        max_new_tokens = min(int(max_new_tokens), self.context - len(prompt))
        request_id = next(self._ids) if request_id is None else request_id
        if request_id in self.sequences:
            raise ValueError(f"Engine: request id {request_id!r} is already in use")
        req = _Request(sampling or SamplingParams(temperature=0.0), logprobs)
        seq = SequenceState(request_id, prompt, max_new_tokens, payload=req)
        self.scheduler.add(seq)
        self.sequences[request_id] = seq
        return request_id

    def abort(self, request_id: Hashable) -> None:
        """Cancel a request (a client went away): its blocks are freed now."""
        seq = self.sequences.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq, "abort")

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[TokenEvent]:
        """Run the model once over this step's batch; the tokens chosen."""
        plan = self.scheduler.schedule()
        if not plan:
            return []
        self.steps += 1
        if self.kernel == "paged":  # ragged rows: everyone in one pass, no padding
            feeds = [(s.request_id, s.tokens[s.computed:s.computed + n]) for s, n in plan]
            rows = forward_paged(self.model, self.cache, feeds)
            logits = {id(s): row for (s, _), row in zip(plan, rows)}
        else:
            # Rows are left-padded to the longest new piece, so a 300-token prompt chunk in
            # one batch with 15 decoding rows would cost 16 x 300 rows of work: the decoding
            # rows run together (one token each), each prompt chunk on its own.
            groups = [[(s, n) for s, n in plan if n == 1]] + [[(s, n)] for s, n in plan if n > 1]
            logits = {id(s): row for group in groups if group
                      for (s, _), row in zip(group, self._run(group))}
        events = []
        for seq, n in plan:
            row = logits[id(seq)]
            seq.computed += n
            if self.cache.share_prefixes:  # name its full blocks, for later prompts to share
                self.cache.record(seq.request_id, seq.tokens)
            if seq.pending:  # a prompt chunk that is not the last: nothing to choose yet
                continue
            req = seq.payload
            ctx = [seq.tokens] if req.sampling.processes else None
            token = int(req.sampling.sample(row[None], req.rng, ctx, len(seq.output))[0])
            seq.output.append(token)
            reason = None
            if token in req.sampling.stop_tokens:
                reason = "stop"
            elif len(seq.output) >= seq.max_new_tokens:
                reason = "length"
            if reason is not None:
                self.scheduler.finish(seq, reason)
                del self.sequences[seq.request_id]
            record = (None if req.logprobs is None else  # the model's own distribution
                      token_logprobs(row[None], [token], req.logprobs)[0])
            events.append(TokenEvent(seq.request_id, token, reason, record))
        return events

    def _run(self, plan: list[tuple[SequenceState, int]]) -> np.ndarray:
        """Logits (B, V) after each planned sequence's new tokens, keeping their keys/values."""
        seqs = [s for s, _ in plan]
        counts = np.array([n for _, n in plan])
        cached = np.array([self.cache.lengths[s.request_id] for s in seqs])
        B, T, C = len(plan), int(counts.max()), int(cached.max())
        ids = np.zeros((B, T), dtype=np.int64)
        positions = np.zeros((B, T), dtype=np.int64)
        new = np.zeros((B, T), dtype=bool)
        for b, (seq, n) in enumerate(plan):
            ids[b, T - n:] = seq.tokens[seq.computed:seq.computed + n]
            positions[b, T - n:] = np.arange(seq.computed, seq.computed + n)
            new[b, T - n:] = True
        k, v, old = self.cache.gather_batch([s.request_id for s in seqs], C)
        scratch = KVCache(k.shape[0], B, k.shape[2], C + T, k.shape[4], dtype=k.dtype)
        scratch.reserve(C + T)  # the buffers hold every column from the start
        scratch.k[:, :, :, :C], scratch.v[:, :, :, :C] = k, v
        scratch.length = C
        mask = np.concatenate([old, new], axis=1)  # (B, C + T): real columns
        attn = None if mask.all() else mask[:, None, None, :]
        # The plain-numpy stepper has no dropout: no train/eval mode to switch.
        logits = self.forward_logits(self.model, ids, positions, scratch, attn,
                                     last_only=True)[:, -1, :]
        for b, (seq, n) in enumerate(plan):  # the new tokens' keys/values into their blocks
            cols = slice(C + T - n, C + T)
            self.cache.write(seq.request_id, scratch.k[:, b, :, cols], scratch.v[:, b, :, cols])
        return logits

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingParams | Sequence[SamplingParams] | None = None
                 ) -> list[list[int]]:
        """Run `prompts` to the end together; each one's new tokens (a convenience for tests
        and benchmarks: the server streams `step`'s events instead)."""
        if sampling is None or isinstance(sampling, SamplingParams):
            sampling = [sampling] * len(prompts)
        ids = [self.add_request(p, max_new_tokens, s) for p, s in zip(prompts, sampling)]
        out: dict[Hashable, list[int]] = {i: [] for i in ids}
        while self.has_work():
            for event in self.step():
                out[event.request_id].append(event.token)
        return [out[i] for i in ids]
