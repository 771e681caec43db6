"""Measuring a language model, part 4 of the guide: one number, the mean negative log-likelihood
of held-out text, reported in the units people compare.

A model that gives each next token probability p pays -ln p nats for it. Averaged over the N
predicted tokens of a text, that is the cross-entropy loss L (nats per token). Everything else
is L in other units:

    perplexity       = exp(L)                      "as unsure as a uniform choice among exp(L)"
    bits per token   = L / ln 2
    bits per char    = L * N / (n_chars * ln 2)    the whole text's cost, spread over its characters
    bits per byte    = L * N / (n_bytes * ln 2)    the same over its UTF-8 bytes

Perplexity and bits per token depend on the tokenizer (a token of four characters is harder to
guess than one of one); bits per character or byte do not, so they are what to compare across
a character model and a BPE model. For a character tokenizer, bits per char = bits per token.
"""
from __future__ import annotations

import math

__all__ = ["bits_per_byte", "bits_per_char", "bits_per_token", "perplexity"]

_LN2 = math.log(2.0)


def _check_nll(mean_nll: float) -> float:
    value = float(mean_nll)
    if math.isnan(value) or value < 0:
        raise ValueError(f"mean_nll must be a number >= 0 (nats per token), got {mean_nll!r}")
    return value


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL in nats); inf when the NLL is too large to exponentiate.

    >>> perplexity(math.log(4))    # a uniform guess among 4 tokens
    4.0
    """
    value = _check_nll(mean_nll)
    return math.exp(value) if value < 709.0 else math.inf


def bits_per_token(mean_nll: float) -> float:
    """Mean NLL converted from nats to bits.

    >>> bits_per_token(math.log(8))  # a uniform guess among 8 tokens costs 3 bits
    3.0
    """
    return _check_nll(mean_nll) / _LN2


def _bits_per_unit(mean_nll: float, n_tokens: int, n_units: int, unit: str) -> float:
    if n_tokens < 0 or n_units <= 0:
        raise ValueError(f"need n_tokens >= 0 and n_{unit} > 0, got {n_tokens} and {n_units}")
    return _check_nll(mean_nll) * n_tokens / (n_units * _LN2)


def bits_per_char(mean_nll: float, n_tokens: int, n_chars: int) -> float:
    """Total bits of a text of `n_tokens` tokens spread over its `n_chars` characters.

    >>> bits_per_char(math.log(2), n_tokens=10, n_chars=40)  # 10 bits over 40 characters
    0.25
    """
    return _bits_per_unit(mean_nll, n_tokens, n_chars, "chars")


def bits_per_byte(mean_nll: float, n_tokens: int, n_bytes: int) -> float:
    """Total bits of a text of `n_tokens` tokens spread over its `n_bytes` UTF-8 bytes."""
    return _bits_per_unit(mean_nll, n_tokens, n_bytes, "bytes")
