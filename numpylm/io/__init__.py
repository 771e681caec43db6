"""Files: safetensors and GGUF for tensors, JSON for configs, all written atomically.

Part of the engine under everything: how weights, optimiser state and settings reach the disk
and come back, with nothing in any file able to execute code.
"""
from numpylm.io.atomic import atomic_write
from numpylm.io.config import load_json, save_json
from numpylm.io.errors import FileFormatError
from numpylm.io.gguf import (
    GGMLType,
    GGUFFile,
    GGUFTensorInfo,
    GGUFValueType,
    RawTensor,
    read_gguf,
    write_gguf,
)
from numpylm.io.safetensors import (
    TensorInfo,
    load_safetensors,
    load_safetensors_with_metadata,
    read_safetensors_header,
    save_safetensors,
)
from numpylm.io.text import read_utf8, write_utf8

__all__ = [
    "FileFormatError",
    "GGMLType",
    "GGUFFile",
    "GGUFTensorInfo",
    "GGUFValueType",
    "RawTensor",
    "TensorInfo",
    "atomic_write",
    "load_json",
    "load_safetensors",
    "load_safetensors_with_metadata",
    "read_gguf",
    "read_safetensors_header",
    "read_utf8",
    "save_json",
    "save_safetensors",
    "write_gguf",
    "write_utf8",
]
