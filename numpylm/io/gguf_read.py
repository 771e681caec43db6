"""Reading GGUF: a header that may lie, checked byte by byte, and tensors mapped from disk.

Part of the engine under everything (the layout is in `numpylm.io.gguf_format`). The file is
memory-mapped, the header parsed with a cursor that knows how many bytes are left, and every
count, length and offset is compared with those bytes *before* anything is built from it: a
header claiming 2^60 tensors or a 10 GB string is refused in microseconds, with a
`FileFormatError` naming the field, instead of allocating or looping on air. Tensor data is
never copied at load: `GGUFFile.raw(name)` is a read-only view of the mapped bytes, so
opening a 100 MB model costs only its header, and each tensor is paged in when it is used.

Decoding a quantized tensor into numbers is not done here: the file layer hands out the raw
block bytes and their ggml type, and `numpylm.quant` unpacks them (`quant.load_tensor`).
"""
from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

import numpy as np

from numpylm.io.errors import FileFormatError
from numpylm.io.gguf_format import (
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    SCALAR_FORMATS,
    GGMLType,
    GGUFValueType,
    ggml_nbytes,
)

__all__ = ["GGUFFile", "GGUFTensorInfo", "MAX_ARRAY_DEPTH", "MAX_DIMS", "read_gguf"]

# Arrays of arrays are allowed by the format; no real file nests more than two levels, and a
# bound keeps a crafted file from recursing Python into a RecursionError.
MAX_ARRAY_DEPTH = 8
# ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
MAX_DIMS = 4
# Fewest bytes an item can take, so a count is checked against the bytes left before looping:
# a key/value is key length (8) + type (4) + at least one value byte; a tensor description is
# name length (8) + n_dims (4) + type (4) + offset (8).
_MIN_KV_BYTES = 13
_MIN_TENSOR_INFO_BYTES = 24
_MIN_ELEMENT_BYTES = {
    **{t: struct.calcsize(f) for t, f in SCALAR_FORMATS.items()},
    GGUFValueType.STRING: 8,
    GGUFValueType.ARRAY: 12,
}
_NUMPY_OF = {  # for reading whole numeric arrays at once (token types, scores: 50k entries)
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2", GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


class GGUFTensorInfo(NamedTuple):
    """One tensor description: `shape` is in NumPy order (ggml's `ne` reversed);
    `offset` counts from the start of the data section as stored, `file_offset` from the start
    of the file; `nbytes` is the size of its packed blocks."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int
    file_offset: int
    nbytes: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end."""

    def __init__(self, buffer: memoryview, path: str) -> None:
        self.buffer, self.pos, self.path = buffer, 0, path

    def left(self) -> int:
        return len(self.buffer) - self.pos

    def take(self, n: int, field: str) -> memoryview:
        if n > self.left():
            raise FileFormatError(
                self.path,
                f"needs {n} bytes at offset {self.pos} but only {self.left()} remain "
                "(file truncated or a length is wrong)",
                field=field,
            )
        chunk = self.buffer[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, fmt: str, field: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))[0]

    def count(self, field: str, min_bytes: int) -> int:
        """A uint64 count of items, each at least `min_bytes` long, that must fit in the file."""
        n = self.scalar("<Q", field)
        if n * min_bytes > self.left():
            raise FileFormatError(
                self.path,
                f"claims {n} items of at least {min_bytes} bytes each, but only "
                f"{self.left()} bytes remain",
                field=field,
            )
        return n

    def string(self, field: str) -> str:
        n = self.scalar("<Q", field + " (length)")
        raw = self.take(n, field)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise FileFormatError(self.path, f"string is not valid UTF-8 ({e})", field=field) \
                from None


def _value_type(cursor: _Cursor, field: str) -> GGUFValueType:
    tag = cursor.scalar("<I", field + " (type)")
    try:
        return GGUFValueType(tag)
    except ValueError:
        raise FileFormatError(cursor.path, f"unknown value type {tag}", field=field) from None


def _read_value(cursor: _Cursor, vtype: GGUFValueType, field: str, depth: int) -> tuple[Any, Any]:
    """(value, type spec); the spec of an array is `[spec of its elements]`."""
    if vtype == GGUFValueType.STRING:
        return cursor.string(field), vtype
    if vtype != GGUFValueType.ARRAY:
        value = cursor.scalar(SCALAR_FORMATS[vtype], field)
        if vtype == GGUFValueType.BOOL:
            value = bool(value)
        return value, vtype
    if depth >= MAX_ARRAY_DEPTH:
        raise FileFormatError(
            cursor.path, f"arrays nest deeper than {MAX_ARRAY_DEPTH} levels", field=field
        )
    etype = _value_type(cursor, field + "[]")
    n = cursor.count(field + " (array length)", _MIN_ELEMENT_BYTES[etype])
    if etype in _NUMPY_OF:
        raw = cursor.take(n * np.dtype(_NUMPY_OF[etype]).itemsize, field)
        return np.frombuffer(raw, dtype=_NUMPY_OF[etype]).tolist(), [etype]
    if etype == GGUFValueType.BOOL:
        raw = np.frombuffer(cursor.take(n, field), dtype=np.uint8)
        return [bool(b) for b in raw], [etype]
    if etype == GGUFValueType.STRING:
        return [cursor.string(f"{field}[{i}]") for i in range(n)], [etype]
    items, spec = [], None
    for i in range(n):
        item, spec = _read_value(cursor, etype, f"{field}[{i}]", depth + 1)
        items.append(item)
    if spec is None:  # an empty array of arrays: the inner element type is not stored
        spec = etype
    return items, [spec]


def _read_tensor_info(cursor: _Cursor, index: int) -> tuple[str, tuple[int, ...], GGMLType, int]:
    name = cursor.string(f"tensor[{index}].name")
    where = f"tensor {name!r}"
    n_dims = cursor.scalar("<I", where + ".n_dims")
    if n_dims > MAX_DIMS:
        raise FileFormatError(
            cursor.path, f"has {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}",
            field=where + ".n_dims",
        )
    ne = [cursor.scalar("<Q", f"{where}.ne[{i}]") for i in range(n_dims)]
    tag = cursor.scalar("<I", where + ".type")
    try:
        ggml_type = GGMLType(tag)
    except ValueError:
        raise FileFormatError(cursor.path, f"unknown ggml type {tag}", field=where + ".type") \
            from None
    offset = cursor.scalar("<Q", where + ".offset")
    return name, tuple(reversed(ne)), ggml_type, offset


class GGUFFile:
    """A parsed GGUF file: `version`, `metadata`, `metadata_types`, `tensors`, `alignment`.

    `metadata` maps each key to a Python value (int, float, bool, str, or a list of them,
    nested for arrays of arrays); `metadata_types` gives each key's stored type: a
    `GGUFValueType`, or `[element spec]` for an array, so a file can be written back with the
    same types. `tensors` maps names to `GGUFTensorInfo` in file order. Tensor bytes stay on
    disk until `raw(name)` is read.
    """

    def __init__(self, path: str, version: int, metadata: dict[str, Any],
                 metadata_types: dict[str, Any], tensors: dict[str, GGUFTensorInfo],
                 alignment: int, data_offset: int, mapped: np.ndarray) -> None:
        self.path = path
        self.version = version
        self.metadata = metadata
        self.metadata_types = metadata_types
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset
        self._mapped = mapped

    def raw(self, name: str) -> np.ndarray:
        """The packed bytes of tensor `name`: a read-only uint8 view of the mapped file."""
        info = self.tensors.get(name)
        if info is None:
            raise FileFormatError(
                self.path, f"no tensor named {name!r} (the file has {len(self.tensors)} tensors)",
                field=name,
            )
        return self._mapped[info.file_offset:info.file_offset + info.nbytes]

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, version={self.version}, {len(self.metadata)} keys, "
                f"{len(self.tensors)} tensors)")


def _alignment(path: str, metadata: dict[str, Any], types: dict[str, Any]) -> int:
    if "general.alignment" not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    value, vtype = metadata["general.alignment"], types["general.alignment"]
    if vtype != GGUFValueType.UINT32 or value <= 0 or value & (value - 1):
        raise FileFormatError(
            path, f"must be a power of two stored as uint32, got {value!r} ({vtype!r})",
            field="general.alignment",
        )
    return value


def _check_tensors(path: str, raw_infos: list, alignment: int, data_offset: int,
                   file_size: int) -> dict[str, GGUFTensorInfo]:
    """Sizes, alignment, bounds and overlaps of every tensor, against the real file size."""
    data_size = max(0, file_size - data_offset)
    tensors: dict[str, GGUFTensorInfo] = {}
    for name, shape, ggml_type, offset in raw_infos:
        where = f"tensor {name!r}"
        if name in tensors:
            raise FileFormatError(path, "tensor name appears twice", field=where)
        try:
            nbytes = ggml_nbytes(ggml_type, shape)
        except ValueError as e:
            raise FileFormatError(path, str(e), field=where + ".ne") from None
        if offset % alignment:
            raise FileFormatError(
                path, f"offset {offset} is not a multiple of the alignment {alignment}",
                field=where + ".offset",
            )
        if offset + nbytes > data_size:
            raise FileFormatError(
                path,
                f"{ggml_type.name} {shape} needs bytes {offset}..{offset + nbytes} of the data "
                f"section, which holds only {data_size} (file truncated or a size is wrong)",
                field=where + ".offset",
            )
        tensors[name] = GGUFTensorInfo(name, shape, ggml_type, offset, data_offset + offset,
                                       nbytes)
    previous = None
    for info in sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)):
        if previous is not None and info.offset < previous.offset + previous.nbytes:
            raise FileFormatError(
                path, f"bytes {info.offset}..{info.offset + info.nbytes} overlap tensor "
                f"{previous.name!r} ({previous.offset}..{previous.offset + previous.nbytes})",
                field=f"tensor {info.name!r}.offset",
            )
        if info.nbytes:
            previous = info
    return tensors


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse the GGUF file at `path`: metadata and tensor descriptions now, tensor bytes lazily.

    Versions 2 and 3 are read (little-endian only). Every inconsistency is a `FileFormatError`
    naming the file and the field.
    """
    where = os.fspath(path)
    file_size = os.path.getsize(where)
    if file_size < 24:
        raise FileFormatError(where, f"file is {file_size} bytes, too short for a GGUF header",
                              field="header")
    mapped = np.memmap(where, dtype=np.uint8, mode="r").view(np.ndarray)
    cursor = _Cursor(memoryview(mapped), where)
    magic = bytes(cursor.take(4, "magic"))
    if magic != GGUF_MAGIC:
        raise FileFormatError(where, f"starts with {magic!r}, not {GGUF_MAGIC!r}", field="magic")
    version = cursor.scalar("<I", "version")
    if version not in (2, 3):
        if int.from_bytes(version.to_bytes(4, "little"), "big") in (2, 3):
            message = "is a big-endian GGUF file; only little-endian files are supported"
        elif version == 1:
            message = "is GGUF version 1 (32-bit counts); only versions 2 and 3 are supported"
        else:
            message = f"{version} is not a GGUF version numpylm reads (2 or 3)"
        raise FileFormatError(where, message, field="version")
    n_tensors = cursor.scalar("<Q", "n_tensors")
    n_kv = cursor.count("n_kv", _MIN_KV_BYTES)
    if n_tensors * _MIN_TENSOR_INFO_BYTES > cursor.left():
        raise FileFormatError(
            where, f"claims {n_tensors} tensors, but the {cursor.left()} bytes left cannot "
            f"describe them", field="n_tensors",
        )

    metadata: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for i in range(n_kv):
        key = cursor.string(f"metadata[{i}].key")
        if key in metadata:
            raise FileFormatError(where, "key appears twice", field=key)
        metadata[key], types[key] = _read_value(cursor, _value_type(cursor, key), key, 0)
    alignment = _alignment(where, metadata, types)

    if n_tensors * _MIN_TENSOR_INFO_BYTES > cursor.left():
        raise FileFormatError(
            where, f"claims {n_tensors} tensors, but only {cursor.left()} bytes follow the "
            "metadata", field="n_tensors",
        )
    raw_infos = [_read_tensor_info(cursor, i) for i in range(n_tensors)]
    data_offset = -(-cursor.pos // alignment) * alignment
    tensors = _check_tensors(where, raw_infos, alignment, data_offset, file_size)
    return GGUFFile(where, version, metadata, types, tensors, alignment, data_offset, mapped)
