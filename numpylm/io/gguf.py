"""GGUF, llama.cpp's one-file model format, read and written in plain Python and NumPy.

Part of the engine under everything. The layout and the type tables are in `gguf_format`, the
careful reader in `gguf_read`, the writer in `gguf_write`; this module gathers their public
names. The file layer hands out raw block bytes and each tensor's ggml type; turning blocks
into numbers is `numpylm.quant`'s work (`numpylm.quant.load_tensor(gguf_file, name)`).

```python
f = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
f.metadata["llama.block_count"]          # 30
f.tensors["blk.0.attn_q.weight"].shape   # (576, 576), NumPy order
f.raw("blk.0.attn_q.weight")             # uint8 view of its Q4_1 blocks, read lazily
```
"""
from numpylm.io.gguf_format import (
    GGUF_DEFAULT_ALIGNMENT,
    GGMLType,
    GGUFValueType,
    ggml_nbytes,
)
from numpylm.io.gguf_read import GGUFFile, GGUFTensorInfo, read_gguf
from numpylm.io.gguf_write import RawTensor, write_gguf

__all__ = [
    "GGMLType",
    "GGUFFile",
    "GGUFTensorInfo",
    "GGUFValueType",
    "GGUF_DEFAULT_ALIGNMENT",
    "RawTensor",
    "ggml_nbytes",
    "read_gguf",
    "write_gguf",
]
