"""Quantizing a whole model, part 3 of the guide: what happens to a model's predictions when
its matrices are stored in fewer bits.

`quantize_weights(model, "q8_0")` rounds every weight matrix of a model in place through a
block format: each matrix is quantized (`quantize_blocks`) and decoded again (`dequantize`), so
the model afterwards computes exactly what a decoder of the packed file computes, and its
perplexity is the quantized model's perplexity. Vectors (norm gains, biases) stay float: they
are a rounding error of the size and llama.cpp keeps them in F32 too. A matrix whose rows are
not a whole number of 32-wide blocks (only in toy models) is left as it is.

It works for any `numpylm.nn.Module` (GPT, Llama, the RNNs, the MLP): the weights are found by
`named_parameters`, not by name. Keeping the weights packed in memory for decoding is the
job of `numpylm.quant.QuantizedLinear`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numpylm.quant.formats import dequantize
from numpylm.quant.quantize import quantize_blocks

__all__ = ["QuantizationReport", "quantize_weights"]

BLOCK = 32


@dataclass
class QuantizationReport:
    """What `quantize_weights` did: matrices rounded and kept, the bytes of the model's
    matrices in float32 and in the format, and the largest relative error of one matrix
    (||W - Q(W)|| / ||W||, Frobenius)."""

    quantized: list[str]
    kept: list[str]
    float32_bytes: int
    packed_bytes: int
    worst_relative_error: float


def quantize_weights(model, kind: str) -> QuantizationReport:
    """Round every matrix of `model` through block format `kind` ("q8_0", "q4_0", "q4_1",
    "f16", "bf16") in place; see the module docstring."""
    quantized, kept = [], []
    float_bytes = packed_bytes = 0
    worst = 0.0
    for name, param in model.named_parameters():
        w = param.data
        if w.ndim != 2:
            continue
        if w.shape[-1] % BLOCK and kind.lower() not in ("f16", "bf16"):
            kept.append(name)
            continue
        raw = quantize_blocks(w, kind)
        back = dequantize(raw.data, raw.ggml_type, raw.shape)
        error = float(np.linalg.norm(back - w) / max(np.linalg.norm(w), 1e-30))
        worst = max(worst, error)
        float_bytes += w.size * 4
        packed_bytes += raw.data.nbytes
        param.data[...] = back
        quantized.append(name)
    return QuantizationReport(quantized, kept, float_bytes, packed_bytes, worst)
