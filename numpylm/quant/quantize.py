"""Quantizers: float weights to int8 codes with scales, per channel or in GGUF's blocks.

Part of inference and serving (quantization). Quantizing replaces each weight w by a small
integer code q and a shared scale s with w ~ s * q (plus an offset z for asymmetric schemes);
the error of one weight is at most half a step, s / 2, unless the code is clipped.

- `quantize_absmax_int8`: symmetric, one scale per output channel, s = max|w| / 127, codes
  round(w / s) in -127..127. Zero stays exactly zero.
- `quantize_zero_point_int8`: asymmetric, s = (max - min) / 255 and an integer zero point z
  with w ~ s * (q - z), so all 256 codes cover [min, max] even when it is lopsided.
- `quantize_blocks(x, type)`: GGUF's Q8_0, Q4_0, Q4_1 (one scale per 32 weights; see
  `blocks_32`) following ggml's reference rounding, plus F32, F16 and BF16, returned as a
  `RawTensor` that `write_gguf` stores and `dequantize` decodes:
    Q8_0: d = max|x| / 127, q = round(x / d) (halves away from zero).
    Q4_0: v = the element of largest magnitude (the first, on a tie), d = v / -8,
          q = min(15, floor(x / d + 8.5)), so v itself maps to code 0, i.e. -8 * d = v.
    Q4_1: d = (max - min) / 15, m = min, q = min(15, floor((x - min) / d + 0.5)).
  All arithmetic is float32 with the reciprocal 1/d multiplied in, as the reference does;
  d and m are then stored as float16.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpylm.io.gguf import GGMLType, RawTensor

__all__ = [
    "Int8Weights",
    "dequantize_int8",
    "quantize_absmax_int8",
    "quantize_blocks",
    "quantize_zero_point_int8",
    "round_half_away",
]

BLOCK = 32


class Int8Weights(NamedTuple):
    """int8 `codes` with one float32 `scale` and int32 `zero_point` per output channel;
    the weights are scale * (codes - zero_point), channels along every axis but `axis`."""

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's roundf: to the nearest integer, halves away from zero (np.round sends them to even)."""
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0).astype(v.dtype)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d as the block quantizers use it, 0 where d is 0 (a block of zeros gets codes 0) or
    so small that 1 / d overflows (d is then 0 in float16 too, and so is every weight)."""
    with np.errstate(divide="ignore", over="ignore"):
        r = np.float32(1) / d.astype(np.float32)
    return np.where(np.isfinite(r), r, np.float32(0)).astype(np.float32)


def _divide(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """w / scale, 0 where the scale is 0. Divided, not multiplied by 1 / scale: an int8 scale is
    kept in float32 and may be subnormal, where 1 / scale would overflow."""
    return np.divide(w, scale, out=np.zeros(np.broadcast_shapes(w.shape, scale.shape),
                                            np.float32), where=scale != 0)


def quantize_absmax_int8(w: np.ndarray, axis: int = -1) -> Int8Weights:
    """Symmetric int8 with one scale per output channel; `axis` is the input axis, reduced over
    (-1 for an (out, in) weight, 0 for GPT-2's (in, out) layout)."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.max(np.abs(w), axis=axis, keepdims=True) / np.float32(127)
    codes = np.clip(round_half_away(_divide(w, scale)), -127, 127).astype(np.int8)
    scale = np.squeeze(scale, axis)
    return Int8Weights(codes, scale, np.zeros(scale.shape, np.int32), axis)


def quantize_zero_point_int8(w: np.ndarray, axis: int = -1) -> Int8Weights:
    """Asymmetric int8 per output channel: w ~ scale * (q - zero_point), q in -128..127."""
    w = np.asarray(w, dtype=np.float32)
    low = np.minimum(np.min(w, axis=axis, keepdims=True), 0)   # keep 0 representable exactly
    high = np.maximum(np.max(w, axis=axis, keepdims=True), 0)
    scale = (high - low) / np.float32(255)
    # z is the code of 0.0: min maps to -128, so z = -128 - round(min / s).
    zero_point = (np.int32(-128) - round_half_away(_divide(low, scale)).astype(np.int32))
    codes = np.clip(round_half_away(_divide(w, scale)) + zero_point, -128, 127).astype(np.int8)
    return Int8Weights(codes, np.squeeze(scale, axis), np.squeeze(zero_point, axis), axis)


def dequantize_int8(q: Int8Weights) -> np.ndarray:
    """float32 weights back from int8 codes: scale * (codes - zero_point)."""
    scale = np.expand_dims(q.scale, q.axis)
    zero = np.expand_dims(q.zero_point, q.axis)
    return scale * (q.codes.astype(np.int32) - zero).astype(np.float32)


def _q8_0(x: np.ndarray) -> np.ndarray:
    d = np.max(np.abs(x), axis=1, keepdims=True) / np.float32(127)
    q = round_half_away(x * _reciprocal(d)).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) codes 0..15 -> (n, 16) bytes: element j low, element j + 16 high."""
    q = q.astype(np.uint8)
    return q[:, :16] | q[:, 16:] << 4


def _q4_0(x: np.ndarray) -> np.ndarray:
    extreme = np.take_along_axis(x, np.argmax(np.abs(x), axis=1)[:, None], axis=1)
    d = extreme / np.float32(-8)
    q = np.minimum(15, np.trunc(x * _reciprocal(d) + np.float32(8.5)))
    return np.concatenate([d.astype("<f2").view(np.uint8), _pack_nibbles(q)], axis=1)


def _q4_1(x: np.ndarray) -> np.ndarray:
    low, high = np.min(x, axis=1, keepdims=True), np.max(x, axis=1, keepdims=True)
    d = (high - low) / np.float32(15)
    q = np.minimum(15, np.trunc((x - low) * _reciprocal(d) + np.float32(0.5)))
    head = np.concatenate([d.astype("<f2"), low.astype("<f2")], axis=1).view(np.uint8)
    return np.concatenate([head, _pack_nibbles(q)], axis=1)


def _bf16(x: np.ndarray) -> np.ndarray:
    # Round to nearest even on the dropped 16 bits; a NaN stays a (quiet) NaN.
    bits = x.view(np.uint32)
    rounded = ((bits + (0x7FFF + (bits >> 16 & 1))) >> 16).astype(np.uint16)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded[nan] = (bits[nan] >> 16 | 0x40).astype(np.uint16)
    return rounded.astype("<u2").view(np.uint8)


_BLOCK_QUANTIZERS = {GGMLType.Q8_0: _q8_0, GGMLType.Q4_0: _q4_0, GGMLType.Q4_1: _q4_1}


def quantize_blocks(x: np.ndarray, ggml_type: str | int | GGMLType) -> RawTensor:
    """Pack float array `x` (rows along the last axis) as `ggml_type`: F32, F16, BF16, Q8_0,
    Q4_0 or Q4_1 (a GGMLType or its name, e.g. "q8_0"). Returns RawTensor(type, bytes, shape)."""
    ggml_type = GGMLType[ggml_type.upper()] if isinstance(ggml_type, str) else GGMLType(ggml_type)
    x = np.ascontiguousarray(x, dtype=np.float32)
    shape = x.shape
    if ggml_type == GGMLType.F32:
        return RawTensor(ggml_type, x.astype("<f4").reshape(-1).view(np.uint8), shape)
    if ggml_type == GGMLType.F16:
        return RawTensor(ggml_type, x.astype("<f2").reshape(-1).view(np.uint8), shape)
    if ggml_type == GGMLType.BF16:
        return RawTensor(ggml_type, _bf16(x.reshape(-1)), shape)
    if ggml_type not in _BLOCK_QUANTIZERS:
        raise ValueError(f"cannot quantize to {ggml_type.name}: numpylm quantizes to "
                         f"F32, F16, BF16, {', '.join(t.name for t in _BLOCK_QUANTIZERS)}")
    if not shape or shape[-1] % BLOCK:
        raise ValueError(f"{ggml_type.name} needs rows of a multiple of {BLOCK} elements, "
                         f"got shape {shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot quantize non-finite values to {ggml_type.name}")
    blocks = _BLOCK_QUANTIZERS[ggml_type](x.reshape(-1, BLOCK))
    return RawTensor(ggml_type, blocks.reshape(-1), shape)
