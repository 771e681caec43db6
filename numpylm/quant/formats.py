"""Which ggml types numpylm can turn back into numbers, and the one function that does it.

Part of inference and serving (quantization). The file layer (`numpylm.io.gguf`) hands out a
tensor's packed bytes and its ggml type; this module looks the type up in `FORMATS` and
unpacks the bytes block by block into float32. Every format has two dequantizers, a readable
one that decodes a single block by the format's definition and a vectorised one over many
blocks, and tests prove them equal; `dequantize` uses the vectorised one, `dequantize_readable`
the other.

The float types are formats too, with blocks of one element: F32 (itself), F16 (IEEE half)
and BF16 (bfloat16: the top 16 bits of a float32, so widening is a 16-bit shift).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from numpylm.io.gguf import GGMLType, GGUFFile
from numpylm.quant.blocks_32 import (
    dequantize_block_q4_0,
    dequantize_block_q4_1,
    dequantize_block_q8_0,
    dequantize_q4_0,
    dequantize_q4_1,
    dequantize_q8_0,
)
from numpylm.quant.blocks_k import (
    dequantize_block_q4_k,
    dequantize_block_q6_k,
    dequantize_q4_k,
    dequantize_q6_k,
)

__all__ = ["FORMATS", "BlockFormat", "dequantize", "dequantize_readable", "load_tensor",
           "supported_type"]


class BlockFormat(NamedTuple):
    """How to decode one ggml type: `block(bytes) -> (block_size,)` float32, readable;
    `blocks((n, type_size) uint8) -> (n, block_size)` float32, vectorised."""

    block: Callable[[bytes], np.ndarray]
    blocks: Callable[[np.ndarray], np.ndarray]


def _block_f32(block: bytes) -> np.ndarray:
    return np.array(struct.unpack("<f", block), dtype=np.float32)


def _block_f16(block: bytes) -> np.ndarray:
    return np.array(struct.unpack("<e", block), dtype=np.float32)


def _block_bf16(block: bytes) -> np.ndarray:
    # bfloat16 is the high half of a float32: put two zero bytes below it (little-endian).
    return np.array(struct.unpack("<f", b"\0\0" + block), dtype=np.float32)


def _blocks_f32(blocks: np.ndarray) -> np.ndarray:
    return blocks.copy().view("<f4").astype(np.float32)


def _blocks_f16(blocks: np.ndarray) -> np.ndarray:
    return blocks.copy().view("<f2").astype(np.float32)


def _blocks_bf16(blocks: np.ndarray) -> np.ndarray:
    return (blocks.copy().view("<u2").astype(np.uint32) << 16).view(np.float32)


FORMATS: dict[GGMLType, BlockFormat] = {
    GGMLType.F32: BlockFormat(_block_f32, _blocks_f32),
    GGMLType.F16: BlockFormat(_block_f16, _blocks_f16),
    GGMLType.BF16: BlockFormat(_block_bf16, _blocks_bf16),
    GGMLType.Q8_0: BlockFormat(dequantize_block_q8_0, dequantize_q8_0),
    GGMLType.Q4_0: BlockFormat(dequantize_block_q4_0, dequantize_q4_0),
    GGMLType.Q4_1: BlockFormat(dequantize_block_q4_1, dequantize_q4_1),
    GGMLType.Q4_K: BlockFormat(dequantize_block_q4_k, dequantize_q4_k),
    GGMLType.Q6_K: BlockFormat(dequantize_block_q6_k, dequantize_q6_k),
}
# Blocks decoded per step of `dequantize`: bounds the temporaries to a few MB whatever the size
# of the tensor (the 49152 x 576 embedding would otherwise need several copies of 113 MB).
_CHUNK_BLOCKS = 1 << 14


def supported_type(ggml_type: int | GGMLType) -> GGMLType:
    """`ggml_type` as a GGMLType numpylm can decode, or a ValueError naming it."""
    try:
        ggml_type = GGMLType(ggml_type)
    except ValueError:
        raise ValueError(f"unknown ggml type {ggml_type!r}") from None
    if ggml_type not in FORMATS:
        raise ValueError(
            f"ggml type {ggml_type.name} is not supported by numpylm.quant "
            f"(supported: {', '.join(t.name for t in FORMATS)})"
        )
    return ggml_type


def _as_blocks(raw: np.ndarray, ggml_type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"packed {ggml_type.name} data must be uint8 bytes, not {raw.dtype}")
    n_elements = math.prod(shape)
    if n_elements % ggml_type.block_size or (shape and shape[-1] % ggml_type.block_size):
        raise ValueError(f"{ggml_type.name} rows hold whole blocks of {ggml_type.block_size} "
                         f"elements; shape {shape} does not")
    n_blocks = n_elements // ggml_type.block_size
    if raw.size != n_blocks * ggml_type.type_size:
        raise ValueError(f"{ggml_type.name} {shape} takes {n_blocks * ggml_type.type_size} bytes, "
                         f"got {raw.size}")
    return raw.reshape(n_blocks, ggml_type.type_size)


def dequantize(raw: np.ndarray, ggml_type: int | GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Decode packed `raw` bytes of `ggml_type` into a new float32 array of `shape`."""
    ggml_type = supported_type(ggml_type)
    shape = tuple(int(d) for d in shape)
    blocks = _as_blocks(raw, ggml_type, shape)
    decode = FORMATS[ggml_type].blocks
    out = np.empty((len(blocks), ggml_type.block_size), dtype=np.float32)
    for start in range(0, len(blocks), _CHUNK_BLOCKS):
        out[start:start + _CHUNK_BLOCKS] = decode(blocks[start:start + _CHUNK_BLOCKS])
    return out.reshape(shape)


def dequantize_readable(raw: np.ndarray, ggml_type: int | GGMLType,
                        shape: tuple[int, ...]) -> np.ndarray:
    """`dequantize`'s readable twin: one Python call per block (slow; for tests and reading)."""
    ggml_type = supported_type(ggml_type)
    shape = tuple(int(d) for d in shape)
    blocks = _as_blocks(raw, ggml_type, shape)
    decode = FORMATS[ggml_type].block
    out = np.empty((len(blocks), ggml_type.block_size), dtype=np.float32)
    for i, block in enumerate(blocks):
        out[i] = decode(block.tobytes())
    return out.reshape(shape)


def load_tensor(gguf_file: GGUFFile, name: str) -> np.ndarray:
    """Tensor `name` of an opened GGUF file, decoded to a new float32 array in NumPy order."""
    info = gguf_file.tensors.get(name)
    raw = gguf_file.raw(name)  # a missing name is a FileFormatError naming it
    try:
        return dequantize(raw, info.ggml_type, info.shape)
    except ValueError as e:
        raise ValueError(f"{gguf_file.path}: tensor {name!r}: {e}") from None
