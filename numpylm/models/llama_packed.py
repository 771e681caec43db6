"""A Llama whose weights stay quantized in memory while it decodes, part 3 of the guide.

Decoding one token reads every weight once, so at batch 1 the bytes of the weights decide
both the memory a model needs and (on a machine whose memory is slow next to its arithmetic)
how fast it runs. `pack_llama(model, "q8_0")` keeps each projection of every layer, and the
embedding with the LM head, as `numpylm.quant.QuantizedLinear` (codes and scales, decoded a
tile at a time inside the product) and drops the float32 matrices; `pack_llama(model, path)`
packs them exactly as a GGUF file stores them (SmolLM2: Q4_1 projections, a Q8_0 embedding),
with the q/k rows permuted back to rotate-half RoPE as `llama_gguf` does for float weights.

The embedding is read two ways: one row per input token (decoded from its blocks alone) and,
when the head is tied to it, as the LM head's matrix (a `QuantizedLinear` of the same bytes).

A packed model decodes (`step`, `generate`, the serving engine); it cannot train or run
`forward`, which need float weights (`forward` says so).
"""
from __future__ import annotations

import os

import numpy as np

from numpylm.autograd.ops_rope import interleaved_to_rotate_half
from numpylm.io.gguf import RawTensor, read_gguf
from numpylm.quant import QuantizedLinear, dequantize, quantize_blocks

__all__ = ["PackedRows", "pack_llama"]

_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class PackedRows:
    """The rows of a packed (V, C) matrix, decoded only for the ids asked for: an embedding
    lookup that never holds the float32 table."""

    def __init__(self, raw: RawTensor) -> None:
        self.ggml_type, self.shape = raw.ggml_type, tuple(raw.shape)
        self.rows = np.asarray(raw.data).reshape(self.shape[0], -1)  # one row of blocks per id

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        flat = ids.reshape(-1)
        out = dequantize(self.rows[flat].reshape(-1), self.ggml_type, (len(flat), self.shape[1]))
        return out.reshape(*ids.shape, self.shape[1])


def _raw_from_file(file, name: str, heads: int | None) -> RawTensor:
    """The GGUF tensor `name` as stored, its rows permuted from interleaved to rotate-half
    RoPE when `heads` is given (a row is a whole number of blocks, so rows move as bytes)."""
    info = file.tensors[name]
    rows = np.asarray(file.raw(name)).reshape(info.shape[0], -1)
    if heads is not None:
        rows = interleaved_to_rotate_half(rows, heads, axis=0)
    return RawTensor(info.ggml_type, np.ascontiguousarray(rows).reshape(-1), tuple(info.shape))


def pack_llama(model, source: str | os.PathLike[str] = "q8_0") -> int:
    """Pack `model`'s matrices for decoding (see the module docstring); return the bytes the
    weights now take. `source` is a block format ("q8_0", "q4_0", "q4_1") to quantize the
    float weights to, or the GGUF file the model was loaded from, to keep its own blocks."""
    from numpylm.models.llama_gguf import gguf_names

    c = model.config
    file = None
    if str(source).lower() not in ("q8_0", "q4_0", "q4_1"):
        file = read_gguf(source)
    names = gguf_names(c)
    heads = {"self_attn.q_proj": c.num_attention_heads,
             "self_attn.k_proj": c.num_key_value_heads}

    def packed(param_name: str, weight: np.ndarray, projection: str | None) -> RawTensor:
        if file is not None:
            return _raw_from_file(file, names[param_name], heads.get(projection))
        return quantize_blocks(weight, str(source))

    total = 0
    for i, layer in enumerate(model.model.layers):
        for path in _PROJECTIONS:
            owner, attr = path.split(".")
            linear = getattr(getattr(layer, owner), attr)
            name = f"model.layers.{i}.{path}.weight"
            bias = None if linear.bias is None else linear.bias.data
            linear.packed = QuantizedLinear(packed(name, linear.weight.data, path), bias)
            linear.weight.data = np.empty((0, 0), dtype=np.float32)  # the float copy goes
            total += linear.packed.nbytes
    embedding = model.model.embed_tokens
    raw = packed("model.embed_tokens.weight", embedding.weight.data, None)
    embedding.packed = PackedRows(raw)
    total += embedding.packed.nbytes
    if model.lm_head is None:
        model.packed_head = QuantizedLinear(raw)
    else:
        model.packed_head = QuantizedLinear(packed("lm_head.weight", model.lm_head.weight.data,
                                                   None))
        model.lm_head.weight.data = np.empty((0, 0), dtype=np.float32)
    total += model.packed_head.nbytes
    embedding.weight.data = np.empty((0, 0), dtype=np.float32)
    total += sum(p.data.nbytes for p in model.parameters())  # the norms (and biases)
    return total
