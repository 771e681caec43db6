"""The safetensors format in plain NumPy: weights stored so that nothing executes from a file.

Part of the engine under everything. A safetensors file is three things in a row:

    [ 8 bytes: N, the header length, unsigned little-endian ]
    [ N bytes: a UTF-8 JSON object (the header)              ]
    [ the byte buffer: every tensor's raw bytes, back to back ]

The header maps each tensor name to `{"dtype": "F32", "shape": [768, 2304],
"data_offsets": [begin, end]}`, with offsets counted from the start of the byte buffer (not
of the file), and may hold one extra key, `"__metadata__"`, a map of strings to strings.
Tensor bytes are little-endian and C-ordered (row-major). The buffer has no gaps and no
overlaps: sorted by offset, each tensor starts where the previous one ended, the first at 0
and the last ending at the end of the file. Because loading only *parses JSON and copies
bytes*, a checkpoint cannot run code, unlike a pickle.

Files written here load in the `safetensors` library and Hugging Face tools, and theirs load
here. Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL.

BF16 (bfloat16: the top 16 bits of a float32) has no NumPy dtype. It is **read into
float32**, which is exact. It is **written only on request**, with
`save_safetensors(..., dtypes={"name": "BF16"})`, rounding float32 to the nearest bfloat16
(ties to even, as PyTorch does); an ordinary float32 array is always stored as F32.

Loaded arrays are fresh, writable, native-endian arrays that own their memory: each tensor is
read straight from the file into its own buffer, so nothing is shared with the file or with
other tensors.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from numpylm.io.atomic import atomic_write
from numpylm.io.config import parse_json
from numpylm.io.errors import FileFormatError
from numpylm.io.text import check_utf8_encodable, find_surrogate

__all__ = [
    "TensorInfo",
    "check_finite",
    "load_safetensors",
    "load_safetensors_with_metadata",
    "read_safetensors_header",
    "save_safetensors",
]

# Storage layout of each safetensors dtype. BF16 is read as raw 16-bit words and widened.
_STORAGE: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}
# NumPy dtype (native order) -> the safetensors name it is stored under by default.
_NAME_OF: dict[np.dtype, str] = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
_FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
# The reference reader refuses headers above 100 MB; a larger one means a corrupt length field.
_MAX_HEADER = 100_000_000
_METADATA_KEY = "__metadata__"
_MAX_DIMS = 32  # NumPy allows 64; no tensor of a language model has more than a handful
_MAX_BYTES = 2**62  # what an int64 byte offset can address, with room to spare


class TensorInfo(NamedTuple):
    """One header entry: the stored dtype name, the shape, and [begin, end) in the byte buffer."""

    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Writing


def _float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16, returned as its 16-bit pattern (uint16).

    bfloat16 keeps the top 16 bits of a float32. Rounding to nearest, ties to even: add
    0x7FFF plus the lowest kept bit, then drop the low 16 bits. A NaN must stay a NaN (the
    addition could carry it into infinity), so NaNs become the canonical quiet NaN 0x7FC0.
    """
    bits = np.asarray(x, dtype=np.float32, order="C").view(np.uint32)
    lowest_kept = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lowest_kept) >> 16).astype(np.uint16)
    rounded[np.isnan(x)] = 0x7FC0
    return rounded


def _as_storage(name: str, array: object, target: str | None) -> tuple[str, np.ndarray]:
    """The safetensors dtype name and the little-endian C-ordered array to write for one tensor."""
    if not isinstance(array, np.ndarray):
        kind = type(array).__name__
        tensor_like = isinstance(getattr(array, "data", None), np.ndarray)
        hint = " (pass its .data array)" if tensor_like else ""
        raise TypeError(f"tensor {name!r} is a {kind}, not a numpy array{hint}")
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
    source = _NAME_OF.get(native)
    if source is None:
        raise TypeError(
            f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store "
            f"(supported: {', '.join(str(d) for d in _NAME_OF)})"
        )
    if target is None or target == source:
        return source, np.asarray(array, dtype=_STORAGE[source], order="C")
    if target not in _STORAGE:
        raise ValueError(f"unknown safetensors dtype {target!r} requested for tensor {name!r}")
    if source not in _FLOAT_NAMES or target not in _FLOAT_NAMES:
        raise ValueError(
            f"tensor {name!r}: only floating-point conversions are offered on save, "
            f"not {source} -> {target}"
        )
    if target == "BF16":
        return "BF16", _float32_to_bf16_bits(array.astype(np.float32)).astype("<u2", copy=False)
    return target, np.asarray(array, dtype=_STORAGE[target], order="C")


def save_safetensors(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` (name -> numpy array) to a safetensors file at `path`, atomically.

    `metadata` is an optional map of strings to strings stored under `"__metadata__"`.
    `dtypes` optionally stores named floating-point tensors under another float dtype, e.g.
    `{"wte.weight": "BF16"}` or `{"wte.weight": "F16"}`; everything else keeps its own dtype.

    Tensors are laid out widest element first, then by name, so that each one starts at a
    multiple of its element size, and the header is padded with spaces to a multiple of 8
    bytes as the reference writer does. The file is written to a temporary name in the same
    directory and renamed into place, so an interrupted save never leaves a torn file.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"tensors must be a mapping of names to arrays, not {type(tensors).__name__}"
        )
    dtypes = dict(dtypes or {})
    unknown = sorted(set(dtypes) - set(tensors))
    if unknown:
        raise ValueError(f"dtypes names tensors that are not being saved: {unknown}")

    stored: dict[str, tuple[str, np.ndarray]] = {}
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        check_utf8_encodable(name, "a tensor name")
        if name == _METADATA_KEY:
            raise ValueError(f"{_METADATA_KEY!r} is reserved for metadata and cannot name a tensor")
        stored[name] = _as_storage(name, array, dtypes.get(name))

    header: dict[str, object] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping of strings, not {type(metadata).__name__}")
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"metadata must map strings to strings; got {key!r}: {type(value).__name__}"
                )
            check_utf8_encodable(key, "a metadata key")
            check_utf8_encodable(value, f"metadata {key!r}")
        header[_METADATA_KEY] = dict(metadata)

    # Widest element first keeps every tensor aligned to its element size (the buffer itself
    # starts 8-aligned because the padded header length is a multiple of 8).
    order = sorted(stored, key=lambda n: (-stored[n][1].dtype.itemsize, n))
    offset = 0
    for name in order:
        dtype_name, data = stored[name]
        header[name] = {
            "dtype": dtype_name,
            "shape": list(data.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        offset += data.nbytes

    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    with atomic_write(path) as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name in order:
            data = stored[name][1]
            if data.size:
                f.write(data.reshape(-1).view(np.uint8).data)


# ---------------------------------------------------------------------------------------------
# Reading


def _is_int(x: object) -> bool:
    # JSON true/false arrive as bool, a subclass of int; they are not sizes.
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_entry(name: str, entry: object, where: str) -> TensorInfo:
    def bad(message: str, part: str | None = None) -> FileFormatError:
        return FileFormatError(where, message, field=f"{name}.{part}" if part else name)

    if not isinstance(entry, dict):
        raise bad(f"entry for tensor {name!r} is not a JSON object")
    missing = {"dtype", "shape", "data_offsets"} - set(entry)
    extra = set(entry) - {"dtype", "shape", "data_offsets"}
    if missing or extra:
        raise bad(
            f"tensor {name!r} entry must have exactly dtype, shape and data_offsets "
            f"(missing {sorted(missing)}, unexpected {sorted(extra)})"
        )
    dtype = entry["dtype"]
    # A list or object is not hashable: test the type before looking it up.
    if not isinstance(dtype, str) or dtype not in _STORAGE:
        raise bad(f"tensor {name!r} has unknown dtype {dtype!r} "
                  f"(supported: {', '.join(_STORAGE)})", "dtype")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"tensor {name!r} shape {shape!r} is not a list of non-negative ints", "shape")
    if len(shape) > _MAX_DIMS:
        raise bad(f"tensor {name!r} has {len(shape)} dimensions; at most {_MAX_DIMS} are "
                  f"supported", "shape")
    # Sizes are compared with the file below; a zero among huge dims would still make an
    # array NumPy cannot describe, so every dim and the product of the others are bounded.
    nonzero = math.prod(d for d in shape if d)
    if nonzero * _STORAGE[dtype].itemsize > _MAX_BYTES:
        raise bad(f"tensor {name!r} shape {shape!r} is implausibly large", "shape")
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad(f"tensor {name!r} data_offsets {offsets!r} must be [begin, end] "
                  "with 0 <= begin <= end", "data_offsets")
    expected = math.prod(shape) * _STORAGE[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise bad(
            f"tensor {name!r} of dtype {dtype} and shape {tuple(shape)} needs "
            f"{expected} bytes but data_offsets {offsets} span {offsets[1] - offsets[0]}",
            "data_offsets")
    return TensorInfo(dtype, tuple(shape), (offsets[0], offsets[1]))


def _read_header(f, where: str) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Parse and validate the header; return entries, metadata and the byte buffer's file offset."""
    file_size = os.fstat(f.fileno()).st_size
    if file_size < 8:
        raise FileFormatError(
            where, f"file is {file_size} bytes, too short to hold the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > file_size - 8:
        raise FileFormatError(
            where, f"header length {n} reaches beyond the end of the file "
                   f"({file_size - 8} bytes follow the length field)", field="header length")
    if n > _MAX_HEADER:
        raise FileFormatError(where, f"header length {n} exceeds the {_MAX_HEADER}-byte limit",
                              field="header length")
    raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(where, f"header is not valid UTF-8 JSON: {e}",
                              field="header") from None
    try:
        header = parse_json(text, None, reject_duplicates=True)
    except FileFormatError as e:
        raise FileFormatError(where, f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise FileFormatError(where, f"header is JSON {type(header).__name__}, not an object",
                              field="header")
    # JSON may spell a lone surrogate as an escape ("\\ud800"); the reference reader refuses it,
    # and so does this one, so that every file read here can be written back.
    for key in header:
        if find_surrogate(key) is not None:
            raise FileFormatError(where, f"tensor name {key!r} holds a lone surrogate at "
                                         f"position {find_surrogate(key)}", field="header")

    metadata = header.pop(_METADATA_KEY, None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) for v in metadata.values()
    ):
        raise FileFormatError(where, f"must map strings to strings, got {metadata!r}"[:200],
                              field=_METADATA_KEY)
    for key, value in metadata.items():
        for text_part in (key, value):
            position = find_surrogate(text_part)
            if position is not None:
                raise FileFormatError(
                    where, f"{text_part[:40]!r} holds a lone surrogate at position {position}",
                    field=f"{_METADATA_KEY}.{key}")

    entries = {name: _parse_entry(name, entry, where) for name, entry in header.items()}

    # The buffer must be tiled exactly: sorted by offset, each tensor begins where the last ended.
    buffer_size = file_size - 8 - n
    position, previous = 0, None
    for name, info in sorted(entries.items(), key=lambda kv: kv[1].data_offsets):
        begin, end = info.data_offsets
        if end > buffer_size:
            raise FileFormatError(
                where, f"tensor {name!r} data_offsets {list(info.data_offsets)} reach beyond the "
                       f"{buffer_size}-byte data buffer (file truncated?)", field=name)
        if begin < position:
            raise FileFormatError(
                where, f"tensor {name!r} data_offsets {list(info.data_offsets)} overlap "
                       f"tensor {previous!r}, which ends at {position}", field=name)
        if begin > position:
            after = f"after tensor {previous!r}" if previous is not None else "at the start"
            raise FileFormatError(
                where, f"gap of {begin - position} bytes {after} (offsets {position}..{begin})",
                field=name)
        position, previous = end, name
    if position != buffer_size:
        raise FileFormatError(
            where, f"{buffer_size - position} bytes after the last tensor are not "
                   "described by the header")
    return entries, metadata, 8 + n


def read_safetensors_header(
    path: str | os.PathLike[str],
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a safetensors file; return its tensor entries and metadata, reading no data."""
    where = os.fspath(path)
    with open(where, "rb") as f:
        entries, metadata, _ = _read_header(f, where)
    return entries, metadata


def _read_tensor(f, name: str, info: TensorInfo, start: int, where: str) -> np.ndarray:
    storage = _STORAGE[info.dtype]
    array = np.empty(info.shape, dtype=storage)
    if array.size:
        f.seek(start + info.data_offsets[0])
        view = array.reshape(-1).view(np.uint8)
        got = f.readinto(view)
        if got != view.size:  # the file shrank after its header was checked
            raise FileFormatError(where, f"truncated ({got} of {view.size} bytes)", field=name)
    if info.dtype == "BF16":
        # bfloat16 bits are the top half of the float32 with the same value: widen exactly.
        return (array.astype(np.uint32) << 16).view(np.float32)
    if info.dtype == "BOOL":
        if array.size and array.max() > 1:
            raise FileFormatError(where, "BOOL tensor holds bytes other than 0 and 1", field=name)
        return array.view(np.bool_)
    if not array.dtype.isnative:  # only on big-endian machines
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def load_safetensors_with_metadata(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (name -> array, in file order; metadata dict, empty if none).

    The whole header is validated before any data is read; every problem is a
    `FileFormatError` (a `ValueError`) naming the file, the field and what is wrong with it.
    """
    where = os.fspath(path)
    with open(where, "rb") as f:
        entries, metadata, start = _read_header(f, where)
        tensors = {
            name: _read_tensor(f, name, info, start, where)
            for name, info in sorted(entries.items(), key=lambda kv: kv[1].data_offsets)
        }
    return tensors, metadata


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a safetensors file into a dict of name -> writable numpy array (metadata dropped).

    Use `load_safetensors_with_metadata` to also get the `"__metadata__"` strings.
    """
    return load_safetensors_with_metadata(path)[0]


def check_finite(tensors: Mapping[str, np.ndarray], where: str | os.PathLike[str]) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor and entry.

    A model with one NaN weight loads, runs and quietly produces garbage (every logit NaN,
    so sampling returns id 0 forever); for weights, the file is wrong, not the model.
    Integer tensors cannot hold either and are skipped.
    """
    for name, array in tensors.items():
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            index = np.unravel_index(int(np.argmin(np.isfinite(array))), array.shape)
            value = array[index]
            raise FileFormatError(where, f"holds {value} at index {tuple(map(int, index))}; "
                                         f"weights must be finite", field=name)


def shape_mismatch(want: dict[str, tuple[int, ...]],
                   have: dict[str, tuple[int, ...]], limit: int = 12) -> str | None:
    """What keeps tensors `have` (name -> shape) from being the tensors `want`: the missing,
    unexpected and mis-shaped names, one line each (worded as `Module.load_state_dict` words
    them, at most `limit` names a line), or None when they fit. Checkpoint loaders call it
    on a header's shapes, before anything is allocated."""
    missing = [k for k in want if k not in have]
    unexpected = sorted(set(have) - set(want))
    wrong = [f"{k}: expected {tuple(want[k])}, got {tuple(have[k])}" for k in want
             if k in have and tuple(have[k]) != tuple(want[k])]
    parts = []
    for label, items, sep in (("missing keys", missing, ", "),
                              ("unexpected keys", unexpected, ", "),
                              ("mis-shaped keys", wrong, "; ")):
        if items:
            more = f" ... ({len(items)} in all)" if len(items) > limit else ""
            parts.append(f"{label}: {sep.join(items[:limit])}{more}")
    return "\n  ".join(parts) or None
