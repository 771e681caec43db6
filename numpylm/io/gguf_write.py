"""Writing GGUF: typed metadata, tensor descriptions, and aligned tensor bytes, atomically.

Part of the engine under everything (the layout is in `numpylm.io.gguf_format`). Every GGUF
metadata value carries a type tag, and readers such as llama.cpp check it (a block count must
be a uint32, a norm epsilon a float32), so the type of each value is chosen here by a fixed
rule, or given explicitly:

- `bool` -> BOOL; `str` -> STRING;
- a Python `int` -> UINT32 when it fits (GGUF's counts and token ids are uint32), else INT32,
  INT64, UINT64; a Python `float` -> FLOAT32 (GGUF's hyperparameters are float32);
- a NumPy scalar or array keeps its own dtype (`np.int32(3)` -> INT32, `np.float64` ->
  FLOAT64, an int32 array -> an array of INT32);
- a list -> an array whose element type follows the same rules over all its elements;
- `metadata_types={"key": GGUFValueType.INT32}` or `{"key": [GGUFValueType.INT32]}` (an array
  of int32; `[[...]]` nests) overrides the rule; `GGUFFile.metadata_types` has this form, so a
  file read by `read_gguf` is written back with the types it had.

Tensors are NumPy arrays (F32, F16, F64, I8..I64 from their dtype) or `RawTensor(ggml_type,
data, shape)` (or a plain `(ggml_type, data, shape)` triple) holding already-packed blocks as
uint8 or bytes, which is what `numpylm.quant.quantize_blocks` produces.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from numpylm.io.atomic import atomic_write
from numpylm.io.gguf_format import (
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    SCALAR_FORMATS,
    GGMLType,
    GGUFValueType,
    ggml_nbytes,
)

__all__ = ["RawTensor", "write_gguf"]

_VERSION = 3


class RawTensor(NamedTuple):
    """A tensor already packed in `ggml_type`: `data` is its uint8 block bytes, `shape` its
    NumPy-order shape (the last axis is the row, a whole number of blocks)."""

    ggml_type: GGMLType
    data: np.ndarray
    shape: tuple[int, ...]


_TYPE_OF_DTYPE = {
    np.dtype(np.float32): GGMLType.F32, np.dtype(np.float16): GGMLType.F16,
    np.dtype(np.float64): GGMLType.F64, np.dtype(np.int8): GGMLType.I8,
    np.dtype(np.int16): GGMLType.I16, np.dtype(np.int32): GGMLType.I32,
    np.dtype(np.int64): GGMLType.I64,
}
_VALUE_TYPE_OF_DTYPE = {
    np.dtype(np.uint8): GGUFValueType.UINT8, np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16, np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32, np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.uint64): GGUFValueType.UINT64, np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float16): GGUFValueType.FLOAT32, np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.float64): GGUFValueType.FLOAT64, np.dtype(np.bool_): GGUFValueType.BOOL,
}
_INT_RANGES = [  # the int rule, in order of preference
    (GGUFValueType.UINT32, 0, 2**32 - 1), (GGUFValueType.INT32, -(2**31), 2**31 - 1),
    (GGUFValueType.INT64, -(2**63), 2**63 - 1), (GGUFValueType.UINT64, 0, 2**64 - 1),
]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _int_type(values: list[int], key: str) -> GGUFValueType:
    low, high = min(values), max(values)
    for vtype, lo, hi in _INT_RANGES:
        if lo <= low and high <= hi:
            return vtype
    raise ValueError(f"metadata {key!r}: integer {high if high > 0 else low} does not fit 64 bits")


def _infer_spec(value: Any, key: str) -> Any:
    """The type spec the rule in the module docstring gives `value`."""
    if isinstance(value, bool | np.bool_):
        return GGUFValueType.BOOL
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, np.generic | np.ndarray) and value.dtype in _VALUE_TYPE_OF_DTYPE:
        vtype = _VALUE_TYPE_OF_DTYPE[value.dtype]
        return vtype if isinstance(value, np.generic) else [vtype]
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return [GGUFValueType.STRING]
    if _is_int(value):
        return _int_type([int(value)], key)
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"metadata {key!r}: an empty list needs an explicit type "
                             "(metadata_types)")
        if all(_is_int(v) for v in value):
            return [_int_type([int(v) for v in value], key)]
        if all(isinstance(v, float) or _is_int(v) for v in value):
            return [GGUFValueType.FLOAT32]
        # An empty inner list takes its type from its siblings: [[1, 2], [], [3]].
        specs = [_infer_spec(v, key) for v in value if not (isinstance(v, list | tuple) and not v)]
        if not specs:
            raise ValueError(f"metadata {key!r}: a list of empty lists needs an explicit type "
                             "(metadata_types)")
        if any(s != specs[0] for s in specs):
            kinds = sorted(set(map(str, specs)))
            raise ValueError(f"metadata {key!r}: list mixes element types {kinds}")
        return [specs[0]]
    raise ValueError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF")


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _encode(value: Any, spec: Any, key: str) -> bytes:
    """The bytes of `value` stored as `spec`, without the leading type tag."""
    if isinstance(spec, list):
        (inner,) = spec
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise ValueError(f"metadata {key!r}: type {spec} needs a list, "
                             f"got {type(value).__name__}")
        etype = GGUFValueType.ARRAY if isinstance(inner, list) else GGUFValueType(inner)
        head = struct.pack("<IQ", etype, len(value))
        if etype in SCALAR_FORMATS and etype != GGUFValueType.BOOL and value:
            fmt = SCALAR_FORMATS[etype]
            try:
                return head + struct.pack(f"<{len(value)}{fmt[1]}", *value)
            except struct.error as e:
                raise ValueError(f"metadata {key!r}: cannot store {value[:8]}... as {etype.name} "
                                 f"({e})") from None
        return head + b"".join(_encode(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    vtype = GGUFValueType(spec)
    if vtype == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"metadata {key!r}: STRING needs a str, got {type(value).__name__}")
        return _string(value)
    if vtype == GGUFValueType.BOOL and not isinstance(value, bool | np.bool_):
        raise ValueError(f"metadata {key!r}: BOOL needs a bool, got {value!r}")
    if vtype == GGUFValueType.ARRAY:
        raise ValueError(f"metadata {key!r}: give an array's type as [element type]")
    try:
        return struct.pack(SCALAR_FORMATS[vtype], value)
    except struct.error as e:
        raise ValueError(f"metadata {key!r}: cannot store {value!r} as {vtype.name} ({e})") \
            from None


def _tensor_bytes(name: str, tensor: Any) -> tuple[GGMLType, tuple[int, ...], np.ndarray]:
    if isinstance(tensor, tuple) and len(tensor) == 3:  # a plain (type, bytes, shape) triple
        tensor = RawTensor(*tensor)
    if isinstance(tensor, RawTensor):
        ggml_type, shape = GGMLType(tensor.ggml_type), tuple(int(d) for d in tensor.shape)
        data = tensor.data
        if isinstance(data, bytes | bytearray | memoryview):
            data = np.frombuffer(data, dtype=np.uint8)
        data = np.ascontiguousarray(data).reshape(-1)
        if data.dtype != np.uint8:
            raise ValueError(f"tensor {name!r}: RawTensor data must be uint8, not {data.dtype}")
        expected = ggml_nbytes(ggml_type, shape) if shape else -1
        if data.size != expected:
            raise ValueError(f"tensor {name!r}: {ggml_type.name} {shape} takes {expected} bytes, "
                             f"but {data.size} were given")
    elif isinstance(tensor, np.ndarray):
        ggml_type = _TYPE_OF_DTYPE.get(tensor.dtype.newbyteorder("="))
        if ggml_type is None:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} has no GGUF type "
                             f"(use one of {sorted(str(d) for d in _TYPE_OF_DTYPE)}, "
                             "or a RawTensor)")
        shape = tensor.shape
        little = tensor.astype(tensor.dtype.newbyteorder("<"), copy=False)
        data = np.ascontiguousarray(little).reshape(-1).view(np.uint8)
    else:
        raise TypeError(f"tensor {name!r} is a {type(tensor).__name__}, "
                        "not a numpy array or RawTensor")
    if not 1 <= len(shape) <= 4:
        raise ValueError(f"tensor {name!r}: GGUF tensors have 1 to 4 dimensions, not shape {shape}")
    return ggml_type, shape, data


def write_gguf(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray | RawTensor],
    alignment: int = GGUF_DEFAULT_ALIGNMENT,
    *,
    metadata_types: Mapping[str, Any] | None = None,
) -> None:
    """Write a GGUF v3 file at `path` (atomically: a temporary file renamed into place).

    Metadata keys and tensors are written in the order given; each tensor starts at a
    multiple of `alignment` (a power of two), which is recorded as `general.alignment` when it
    is not the default 32.
    """
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a positive power of two, not {alignment}")
    metadata = dict(metadata)
    types = dict(metadata_types or {})
    unknown = sorted(set(types) - set(metadata))
    if unknown:
        raise ValueError(f"metadata_types names keys that are not in metadata: {unknown}")
    if "general.alignment" in metadata:
        if metadata["general.alignment"] != alignment:
            raise ValueError(f"metadata general.alignment={metadata['general.alignment']!r} "
                             f"disagrees with alignment={alignment}")
        types["general.alignment"] = GGUFValueType.UINT32
    elif alignment != GGUF_DEFAULT_ALIGNMENT:
        metadata["general.alignment"] = alignment
        types["general.alignment"] = GGUFValueType.UINT32

    header = [GGUF_MAGIC, struct.pack("<IQQ", _VERSION, len(tensors), len(metadata))]
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {key!r}")
        spec = types[key] if key in types else _infer_spec(value, key)
        tag = GGUFValueType.ARRAY if isinstance(spec, list) else GGUFValueType(spec)
        header += [_string(key), struct.pack("<I", tag), _encode(value, spec, key)]

    packed = []
    offset = 0
    for name, tensor in tensors.items():
        ggml_type, shape, data = _tensor_bytes(name, tensor)
        header += [_string(name), struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(shape)),
                   struct.pack("<IQ", ggml_type, offset)]
        packed.append((offset, data))
        offset += -(-data.size // alignment) * alignment

    head = b"".join(header)
    with atomic_write(path) as f:
        f.write(head + bytes(-len(head) % alignment))
        for start, data in packed:
            f.write(data.data)
            f.write(bytes(-data.size % alignment))
