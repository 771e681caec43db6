"""Serving, part 3 of the guide: how one copy of a model answers many people at once. A paged KV
cache (`paged_cache`) read in place by attention (`paged_attention`), one ragged pass over every
running sequence (`forward`), a continuous-batching scheduler (`scheduler`), the engine that runs
a model with them (`engine`), and an OpenAI-compatible HTTP server with a chat page (`server`)."""
from numpylm.serving.engine import Engine, TokenEvent
from numpylm.serving.forward import forward_paged
from numpylm.serving.paged_attention import attend_gathered, attend_newest, attend_runs
from numpylm.serving.paged_cache import PagedKVCache
from numpylm.serving.scheduler import Scheduler, SequenceState

__all__ = ["Engine", "TokenEvent", "PagedKVCache", "Scheduler", "SequenceState",
           "attend_gathered", "attend_newest", "attend_runs", "forward_paged"]
