"""Inference, part 3 of the guide: sampling the next token, and batched and streamed generation
for every model family through the one decoding contract (`numpylm.models.base`)."""
from numpylm.inference.generate import context_limit, end_of_text_ids, generate, generate_stream
from numpylm.inference.sampling import SamplingParams, sample_next, top_k_filter, top_p_filter
from numpylm.models.kv_cache import KVCache

__all__ = ["generate", "generate_stream", "context_limit", "end_of_text_ids", "KVCache", "SamplingParams",
           "sample_next", "top_k_filter", "top_p_filter"]
