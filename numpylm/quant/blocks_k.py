"""The K-quant super-block formats Q4_K and Q6_K: scales that are themselves quantized.

Part of inference and serving (quantization). A K-quant block covers 256 weights as 16
sub-blocks of 16 (Q6_K) or 8 sub-blocks of 32 (Q4_K); each sub-block has its own small
integer scale, and one float16 per super-block turns those integers into real scales. This
keeps the per-weight precision of small blocks at the storage cost of large ones: Q4_K costs
4.5 bits per weight, Q6_K 6.5625.

    Q4_K (144 bytes): d: f16 | dmin: f16 | scales[12] | qs[128]
        sub-block j (32 weights) has a 6-bit scale sc_j and a 6-bit minimum m_j packed in
        `scales`; x = (d * sc_j) * q - (dmin * m_j) with 4-bit codes q.
        For j < 4:  sc_j = scales[j] & 63,              m_j = scales[j + 4] & 63
        For j >= 4: sc_j = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4
                    m_j  = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4
        The codes come in 4 chunks of 32 bytes: chunk c holds sub-block 2c in its low
        nibbles and sub-block 2c + 1 in its high nibbles.

    Q6_K (210 bytes): ql[128] | qh[64] | scales[16]: int8 | d: f16
        x_k = (d * scales[k // 16]) * (q_k - 32) with 6-bit codes q_k = low 4 bits from `ql`
        and high 2 bits from `qh`. Each half h (128 weights) uses ql[64h:64h+64] and
        qh[32h:32h+32]; for l in 0..31 of that half:
            q[l]      = ql[l]      & 15 | (qh[l] >> 0 & 3) << 4
            q[l + 32] = ql[l + 32] & 15 | (qh[l] >> 2 & 3) << 4
            q[l + 64] = ql[l]      >> 4 | (qh[l] >> 4 & 3) << 4
            q[l + 96] = ql[l + 32] >> 4 | (qh[l] >> 6 & 3) << 4

As in `blocks_32`, each format has a readable one-block dequantizer and a vectorised twin
doing the same float32 operations in the same order.
"""
from __future__ import annotations

import struct

import numpy as np

from numpylm.quant.blocks_32 import f16_field

__all__ = [
    "dequantize_block_q4_k",
    "dequantize_block_q6_k",
    "dequantize_q4_k",
    "dequantize_q6_k",
    "q4_k_scales_and_mins",
]

f32 = np.float32


# --------------------------------------------------------------------------- one block at a time


def q4_k_scales_and_mins(scales: bytes) -> tuple[list[int], list[int]]:
    """Unpack the eight 6-bit scales and eight 6-bit minimums from Q4_K's 12 bytes."""
    sc, mins = [], []
    for j in range(8):
        if j < 4:
            sc.append(scales[j] & 63)
            mins.append(scales[j + 4] & 63)
        else:
            sc.append((scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4)
            mins.append((scales[j + 4] >> 4) | (scales[j] >> 6) << 4)
    return sc, mins


def dequantize_block_q4_k(block: bytes) -> np.ndarray:
    """144 bytes -> 256 floats."""
    d, dmin = struct.unpack_from("<ee", block, 0)
    sc, mins = q4_k_scales_and_mins(block[4:16])
    qs = block[16:144]
    y = np.empty(256, dtype=np.float32)
    for j in range(8):  # sub-block j: 32 weights
        chunk = qs[32 * (j // 2): 32 * (j // 2) + 32]
        scale, minimum = f32(d) * f32(sc[j]), f32(dmin) * f32(mins[j])
        for i in range(32):
            q = chunk[i] & 15 if j % 2 == 0 else chunk[i] >> 4
            y[32 * j + i] = scale * f32(q) - minimum
    return y


def dequantize_block_q6_k(block: bytes) -> np.ndarray:
    """210 bytes -> 256 floats."""
    ql, qh = block[0:128], block[128:192]
    scales = struct.unpack_from("<16b", block, 192)
    (d,) = struct.unpack_from("<e", block, 208)
    q = [0] * 256
    for h in range(2):
        low, high = ql[64 * h: 64 * h + 64], qh[32 * h: 32 * h + 32]
        for l in range(32):
            q[128 * h + l] = (low[l] & 15) | (high[l] >> 0 & 3) << 4
            q[128 * h + l + 32] = (low[l + 32] & 15) | (high[l] >> 2 & 3) << 4
            q[128 * h + l + 64] = (low[l] >> 4) | (high[l] >> 4 & 3) << 4
            q[128 * h + l + 96] = (low[l + 32] >> 4) | (high[l] >> 6 & 3) << 4
    return np.array([f32(d) * f32(scales[k // 16]) * f32(q[k] - 32) for k in range(256)],
                    dtype=np.float32)


# --------------------------------------------------------------------------- many blocks at once


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """(n, 144) uint8 -> (n, 256) float32."""
    n = len(blocks)
    s = blocks[:, 4:16].astype(np.uint8)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | (s[:, 0:4] >> 6) << 4], axis=1)
    mins = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | (s[:, 4:8] >> 6) << 4], axis=1)
    qs = blocks[:, 16:].reshape(n, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(n, 8, 32)  # sub-blocks 2c, 2c + 1
    scale = f16_field(blocks, 0) * sc.astype(np.float32)             # (n, 8)
    minimum = f16_field(blocks, 2) * mins.astype(np.float32)
    y = scale[:, :, None] * q.astype(np.float32) - minimum[:, :, None]
    return y.reshape(n, 256)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(n, 210) uint8 -> (n, 256) float32."""
    n = len(blocks)
    ql = blocks[:, 0:128].reshape(n, 2, 64)
    qh = blocks[:, 128:192].reshape(n, 2, 32)
    low = np.concatenate([ql[:, :, :32] & 15, ql[:, :, 32:] & 15,
                          ql[:, :, :32] >> 4, ql[:, :, 32:] >> 4], axis=2)       # (n, 2, 128)
    high = np.concatenate([qh & 3, qh >> 2 & 3, qh >> 4 & 3, qh >> 6 & 3], axis=2)  # (n, 2, 128)
    q = (low | high << 4).astype(np.int8) - np.int8(32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)                 # (n, 16)
    scale = f16_field(blocks, 208) * scales
    y = scale[:, :, None] * q.reshape(n, 16, 16).astype(np.float32)
    return y.reshape(n, 256)
