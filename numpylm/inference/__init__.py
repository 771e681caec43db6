"""Inference, part 3 of the guide: sampling the next token, and batched and streamed generation
for every model family through the one decoding contract (`numpylm.models.base`); logit
processors, log-probabilities, beam search, speculative decoding and constrained output."""
from numpylm.inference.beam import Beam, beam_search
from numpylm.inference.constrained import (RegexConstraint, choice_regex, constrained_generate,
                                           json_schema_regex)
from numpylm.inference.generate import context_limit, end_of_text_ids, generate, generate_stream
from numpylm.inference.logprobs import TokenLogprob, generate_with_logprobs
from numpylm.inference.sampling import SamplingParams, sample_next, top_k_filter, top_p_filter
from numpylm.inference.speculative import SpeculativeResult, speculative_generate
from numpylm.models.kv_cache import KVCache

__all__ = ["generate", "generate_stream", "context_limit", "end_of_text_ids", "KVCache", "SamplingParams",
           "sample_next", "top_k_filter", "top_p_filter", "Beam", "beam_search", "RegexConstraint",
           "choice_regex", "constrained_generate", "json_schema_regex", "TokenLogprob",
           "generate_with_logprobs", "SpeculativeResult", "speculative_generate"]
