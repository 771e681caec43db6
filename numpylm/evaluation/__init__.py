"""Evaluation: how well a model predicts held-out text, in nats, bits and perplexity."""
from numpylm.evaluation.evaluate import (EvalReport, evaluate_ids, evaluate_text,
                                         evaluate_tokens, report_from_nll)
from numpylm.evaluation.metrics import bits_per_byte, bits_per_char, bits_per_token, perplexity

__all__ = ["EvalReport", "bits_per_byte", "bits_per_char", "bits_per_token",
           "evaluate_ids", "evaluate_text", "evaluate_tokens", "perplexity", "report_from_nll"]
