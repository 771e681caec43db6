"""Inference, part 3 of the guide: sampling the next token, the KV cache, and batched and
streamed generation for every model family."""
from numpylm.inference.generate import context_limit, generate, generate_stream
from numpylm.inference.kv_cache import KVCache
from numpylm.inference.sampling import sample_next, top_k_filter, top_p_filter

__all__ = ["generate", "generate_stream", "context_limit", "KVCache", "sample_next",
           "top_k_filter", "top_p_filter"]
