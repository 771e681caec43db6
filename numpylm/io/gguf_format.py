"""The GGUF file layout and its two type tables: what the reader checks and the writer produces.

Part of the engine under everything. GGUF is the single-file format of llama.cpp: a header of
typed key/value metadata (the model's config, its tokenizer, its chat template), a table of
tensor descriptions, then the tensors' bytes, each tensor starting at a multiple of the
file's alignment. Every number is little-endian:

    magic        4 bytes  b"GGUF"
    version      uint32   2 or 3 (3 only adds big-endian files, which numpylm refuses)
    n_tensors    uint64
    n_kv         uint64
    n_kv times:      key (string), value type (uint32), value
    n_tensors times: name (string), n_dims (uint32), ne[n_dims] (uint64 each),
                     ggml type (uint32), offset (uint64, from the start of the data section)
    padding      zeros up to a multiple of `general.alignment` (32 when the key is absent)
    data section the tensors' bytes

A string is a uint64 byte count then that many UTF-8 bytes (no terminating zero). An array
value is an element type (uint32), a uint64 count, then the elements, which may be arrays
themselves. `ne` lists dimensions fastest-varying first, the reverse of NumPy's shape: a
(rows, cols) matrix is stored with ne = [cols, rows].

A tensor's ggml type says how its elements are packed. Plain types (F32, F16, I8, ...) hold
one element per `type_size` bytes; quantized types pack `block_size` consecutive elements of
a row into a block of `type_size` bytes, so a row's length must be a multiple of the block
size. This module only knows the sizes; `numpylm.quant` knows how to unpack each block.
"""
from __future__ import annotations

import enum
import math

__all__ = ["GGMLType", "GGUFValueType", "GGUF_DEFAULT_ALIGNMENT", "GGUF_MAGIC", "ggml_nbytes"]

GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32


class GGUFValueType(enum.IntEnum):
    """The type tag stored before every metadata value (and every array's elements)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format of each fixed-size value type (STRING and ARRAY have a length prefix instead).
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class GGMLType(enum.IntEnum):
    """ggml's tensor types, by the number stored in a GGUF tensor description.

    `GGMLType.Q4_0.block_size` is how many elements one block holds and `.type_size` how many
    bytes it takes (for plain types: 1 element and the element's size).
    """

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39

    @property
    def block_size(self) -> int:
        return _SIZES[self][0]

    @property
    def type_size(self) -> int:
        return _SIZES[self][1]


# (elements per block, bytes per block), from the block definitions in ggml.
_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2), GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1), GGMLType.I16: (1, 2), GGMLType.I32: (1, 4), GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 18), GGMLType.Q4_1: (32, 20), GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24), GGMLType.Q8_0: (32, 34), GGMLType.Q8_1: (32, 40),
    GGMLType.Q2_K: (256, 84), GGMLType.Q3_K: (256, 110), GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176), GGMLType.Q6_K: (256, 210), GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66), GGMLType.IQ2_XS: (256, 74), GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50), GGMLType.IQ4_NL: (32, 18), GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82), GGMLType.IQ4_XS: (256, 136), GGMLType.IQ1_M: (256, 56),
    GGMLType.TQ1_0: (256, 54), GGMLType.TQ2_0: (256, 66), GGMLType.MXFP4: (32, 17),
}


def ggml_nbytes(ggml_type: GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of `shape` (NumPy order, last axis = row) takes in `ggml_type`.

    Raises ValueError when the row length is not a whole number of blocks.
    """
    ggml_type = GGMLType(ggml_type)
    row = shape[-1] if shape else 1
    if row % ggml_type.block_size:
        raise ValueError(
            f"a {ggml_type.name} row holds whole blocks of {ggml_type.block_size} elements; "
            f"shape {tuple(shape)} has rows of {row}"
        )
    return math.prod(shape) // ggml_type.block_size * ggml_type.type_size
