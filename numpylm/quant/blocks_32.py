"""The 32-element block formats Q8_0, Q4_0 and Q4_1: one scale per 32 weights.

Part of inference and serving (quantization). A weight row is cut into blocks of 32; each
block stores a float16 scale `d` (and for Q4_1 a float16 offset `m`) and 32 small integer
codes, so a weight costs 8.5 (Q8_0), 4.5 (Q4_0) or 5 (Q4_1) bits instead of 32:

    Q8_0  (34 bytes): d: f16 | q[32]: int8                       x_i = d * q_i
    Q4_0  (18 bytes): d: f16 | qs[16]: two 4-bit codes per byte  x_i = d * (q_i - 8)
    Q4_1  (20 bytes): d: f16 | m: f16 | qs[16]                   x_i = d * q_i + m

In Q4_0 and Q4_1, byte j of `qs` holds element j in its low nibble and element j + 16 in its
high nibble (not j and j + 1): the first half of the block is all the low nibbles.

Each format has a readable dequantizer of one block (`dequantize_block_*`, a loop over the
definition above) and a vectorised twin over many blocks (`dequantize_*`), computed in float32
with the same operations in the same order so that the two agree bit for bit.
"""
from __future__ import annotations

import struct

import numpy as np

__all__ = [
    "dequantize_block_q4_0",
    "dequantize_block_q4_1",
    "dequantize_block_q8_0",
    "dequantize_q4_0",
    "dequantize_q4_1",
    "dequantize_q8_0",
    "f16_field",
    "nibbles",
]

f32 = np.float32


# --------------------------------------------------------------------------- one block at a time


def dequantize_block_q8_0(block: bytes) -> np.ndarray:
    """34 bytes -> 32 floats: x_i = d * q_i."""
    (d,) = struct.unpack_from("<e", block, 0)
    q = struct.unpack_from("<32b", block, 2)
    return np.array([f32(d) * f32(q[i]) for i in range(32)], dtype=np.float32)


def _codes_4bit(qs: bytes) -> list[int]:
    """The 32 codes of a 4-bit block: low nibbles are elements 0..15, high nibbles 16..31."""
    return [b & 0x0F for b in qs] + [b >> 4 for b in qs]


def dequantize_block_q4_0(block: bytes) -> np.ndarray:
    """18 bytes -> 32 floats: x_i = d * (q_i - 8), codes 0..15 centred on 8."""
    (d,) = struct.unpack_from("<e", block, 0)
    q = _codes_4bit(block[2:18])
    return np.array([f32(d) * f32(q[i] - 8) for i in range(32)], dtype=np.float32)


def dequantize_block_q4_1(block: bytes) -> np.ndarray:
    """20 bytes -> 32 floats: x_i = d * q_i + m, codes 0..15 above the block's minimum m."""
    d, m = struct.unpack_from("<ee", block, 0)
    q = _codes_4bit(block[4:20])
    return np.array([f32(d) * f32(q[i]) + f32(m) for i in range(32)], dtype=np.float32)


# --------------------------------------------------------------------------- many blocks at once


def f16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block (rows of `blocks`), as a float32 column."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32) codes in element order: low nibbles, then high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """(n, 34) uint8 -> (n, 32) float32."""
    q = blocks[:, 2:].view(np.int8).astype(np.float32)
    return f16_field(blocks, 0) * q


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """(n, 18) uint8 -> (n, 32) float32."""
    q = nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return f16_field(blocks, 0) * q.astype(np.float32)


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """(n, 20) uint8 -> (n, 32) float32."""
    q = nibbles(blocks[:, 4:]).astype(np.float32)
    return f16_field(blocks, 0) * q + f16_field(blocks, 2)
