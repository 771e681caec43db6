"""Continuous batching, part 3 of the guide: how one model answers many people at once without
anyone waiting for someone else's long answer (Yu et al. 2022, "Orca"; Kwon et al. 2023).

Static batching runs a batch until its longest member is done: a request for 5 tokens queued
behind one for 500 waits for all 500. Continuous batching decides the batch again before every
step of the model:

- requests **join** the running batch between steps, as soon as there is room, and **leave** it
  the step they finish (their blocks go back to the pool at once);
- each step feeds every running sequence its next tokens, within a budget of
  `max_tokens_per_step`: one token for each sequence that is decoding (those go first, so that
  everyone's next token comes on time), then prompt tokens in **chunks** of what is left of
  the budget (chunked prefill: a 4,000-token prompt is read over several steps instead of
  stalling everyone for one long one);
- at most `max_running` sequences run at once;
- when the pool has no free block for a running sequence, the **newest** running sequence is
  **pre-empted**: its blocks are freed and it goes back to the front of the queue; when it is
  scheduled again its prompt and the tokens it had produced are read again (recomputed), and it
  continues where it stopped. The oldest requests keep their memory and finish first.

This module is only the bookkeeping (which sequence feeds how many tokens this step); the engine
(`numpylm.serving.engine`) runs the model and samples.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from numpylm.serving.paged_cache import PagedKVCache

__all__ = ["Scheduler", "SequenceState"]


@dataclass(eq=False)
class SequenceState:
    """One request as the scheduler sees it: its ids so far and how many are in the cache."""

    request_id: Any
    prompt: list[int]
    max_new_tokens: int
    arrival: int = 0
    output: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose keys and values are in the cache
    preemptions: int = 0
    finish_reason: str | None = None
    payload: Any = None  # what the engine keeps with it (sampling settings, generator)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def pending(self) -> int:
        """Tokens to feed before the next one can be chosen (prompt chunks, or the last token)."""
        return len(self.prompt) + len(self.output) - self.computed

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Scheduler:
    """Which sequences feed how many tokens each step, over one `PagedKVCache`."""

    def __init__(self, cache: PagedKVCache, max_running: int = 16,
                 max_tokens_per_step: int = 256) -> None:
        for name, value in (("max_running", max_running),
                            ("max_tokens_per_step", max_tokens_per_step)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Scheduler: {name} must be a positive integer, got {value!r}")
        self.cache = cache
        self.max_running, self.max_tokens_per_step = int(max_running), int(max_tokens_per_step)
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []  # in order of arrival, oldest first
        self.preemptions = 0
        self._arrivals = 0

    def add(self, seq: SequenceState) -> None:
        """Queue a new sequence (it joins the batch at a later `schedule`)."""
        need = self.cache.blocks_for(len(seq.prompt) + seq.max_new_tokens)
        if need > self.cache.num_blocks:
            raise ValueError(f"Scheduler: a request of {len(seq.prompt)} prompt + "
                             f"{seq.max_new_tokens} new tokens needs {need} blocks, more "
                             f"than the pool's {self.cache.num_blocks}")
        seq.arrival = self._arrivals
        self._arrivals += 1
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: SequenceState, reason: str) -> None:
        """Take a sequence out (done, or cancelled) and free its blocks."""
        seq.finish_reason = reason
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq.request_id in self.cache:
            self.cache.free(seq.request_id)

    def _preempt(self, seq: SequenceState) -> None:
        """Free `seq`'s blocks and queue it first: it will read its tokens again."""
        self.running.remove(seq)
        self.cache.free(seq.request_id)
        seq.computed = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> list[tuple[SequenceState, int]]:
        """The (sequence, number of its pending tokens to feed) of this step, decoding
        sequences first, then prompt chunks; room in the cache is reserved for all of them."""
        budget = self.max_tokens_per_step
        plan: list[tuple[SequenceState, int]] = []
        # Decoding sequences (one pending token) first, then the prefills, oldest first.
        order = sorted(self.running, key=lambda s: (s.pending > 1, s.arrival))
        for seq in order:
            if budget == 0:
                break
            if seq not in self.running:  # pre-empted for an older one this step
                continue
            n = min(seq.pending, budget)
            while not self.cache.reserve(seq.request_id, n):
                victim = self.running[-1]  # the newest running sequence gives way
                self._preempt(victim)
                plan = [(s, m) for s, m in plan if s is not victim]
                if victim is seq:
                    break
            else:
                plan.append((seq, n))
                budget -= n
        budget = self.max_tokens_per_step - sum(n for _, n in plan)
        # New (or pre-empted) sequences join while there is room; they never pre-empt.
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            self.cache.add(seq.request_id, len(seq.prompt) + seq.max_new_tokens)
            # Blocks another sequence already holds for the same first tokens are taken,
            # not computed (a no-op unless the cache shares prefixes).
            seq.computed = self.cache.share(seq.request_id, seq.tokens)
            n = min(seq.pending, budget)
            if not self.cache.reserve(seq.request_id, n):
                self.cache.free(seq.request_id)
                seq.computed = 0
                break
            self.waiting.popleft()
            self.running.append(seq)
            self.running.sort(key=lambda s: s.arrival)
            plan.append((seq, n))
            budget -= n
        return plan
