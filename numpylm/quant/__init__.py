"""Quantization: GGUF's block formats decoded, float weights quantized, and a quantized layer.

Part of inference and serving. A weight stored in fewer bits (8, 6, 4) with shared scales
takes a quarter or an eighth of float32's memory and of the bytes read per generated token;
this package shows the formats real GGUF files use (`blocks_32`: Q8_0, Q4_0, Q4_1; `blocks_k`:
Q4_K, Q6_K), how to decode any of them (`formats`), how to produce them (`quantize`), and a
linear layer that multiplies with its weights still packed (`linear`).
"""
from numpylm.quant.formats import (
    FORMATS,
    BlockFormat,
    dequantize,
    dequantize_readable,
    load_tensor,
    supported_type,
)
from numpylm.quant.linear import QuantizedLinear
from numpylm.quant.model import QuantizationReport, quantize_weights
from numpylm.quant.quantize import (
    Int8Weights,
    dequantize_int8,
    quantize_absmax_int8,
    quantize_blocks,
    quantize_zero_point_int8,
)

__all__ = [
    "FORMATS",
    "BlockFormat",
    "Int8Weights",
    "QuantizationReport",
    "QuantizedLinear",
    "dequantize",
    "dequantize_int8",
    "dequantize_readable",
    "load_tensor",
    "quantize_absmax_int8",
    "quantize_blocks",
    "quantize_weights",
    "quantize_zero_point_int8",
    "supported_type",
]
