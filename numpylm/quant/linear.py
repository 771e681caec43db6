"""A linear layer whose weights stay quantized in memory, decoded a tile at a time.

Part of inference and serving (quantization). Generating one token reads every weight once,
so at batch 1 the speed of a model is the speed at which its weights stream from memory; a
Q8_0 weight is 8.5 bits instead of 32. `QuantizedLinear` keeps the codes and scales (Q8_0:
int8 codes and a float32 scale per 32 weights; Q4_0 / Q4_1: packed nibbles) and computes
y = x @ W^T + b for NumPy arrays, for inference only (no gradient).

The weight never exists whole in float32: rows are decoded a tile at a time (a few hundred
rows, about 1 MB, so the tile stays in the core's cache) into one scratch buffer shared by
every layer, and the tile is multiplied at once. Two named paths do this, chosen by the number
of input rows:

- `_matvec` (one input row: decoding one token, where speed matters most). The codes are
  only cast to float; each block b of 32 columns is multiplied by its 32 entries of x (one
  batched product over the blocks), and the scales are applied to those (rows x blocks)
  partial sums instead of to every weight, which saves a full pass over the tile:
      y_o = sum_b d_ob * sum_j q_obj x_bj  (+ sum_b c_ob * sum_j x_bj)
  with c = 0 for Q8_0, -8 d for Q4_0 (x = d (q - 8)) and m for Q4_1 (x = d q + m). For the
  4-bit formats the low and the high nibbles (the two halves of each block) are handled as
  two separate contiguous arrays, so no pass interleaves them.
- `_dequantized` (several rows, e.g. a prompt). The tile is decoded to exactly the weights
  `quant.dequantize` gives and multiplied by all rows with one matrix product, whose cost
  then dwarfs the decoding.

Other formats (F16, BF16, Q4_K, Q6_K) keep their GGUF blocks as they are and always take the
second path, decoded by their vectorised dequantizer.
"""
from __future__ import annotations

import threading

import numpy as np

from numpylm.io.gguf import GGMLType, GGUFFile, RawTensor
from numpylm.quant.blocks_32 import f16_field
from numpylm.quant.formats import FORMATS, supported_type
from numpylm.quant.quantize import quantize_blocks

__all__ = ["QuantizedLinear"]

BLOCK = 32
TILE_BYTES = 1 << 20
_scratch = threading.local()


def _scratch_buffer(n: int, dtype: type = np.float32) -> np.ndarray:
    """A buffer of `n` elements of `dtype`, one per thread and dtype, reused by every layer:
    the tiles of all layers together cost one tile of memory."""
    name = f"buffer_{np.dtype(dtype).name}"
    buffer = getattr(_scratch, name, None)
    if buffer is None or buffer.size < n:
        buffer = np.empty(n, dtype=dtype)
        setattr(_scratch, name, buffer)
    return buffer[:n]


class QuantizedLinear:
    """y = x @ W^T + b with W (out_features, in_features) kept packed in a ggml block format.

    Build it from float weights (`from_float(w, "q8_0")`), from packed bytes
    (`QuantizedLinear(RawTensor(...))`) or from a GGUF tensor (`from_gguf(file, name)`).
    """

    def __init__(self, weight: RawTensor, bias: np.ndarray | None = None,
                 tile_rows: int | None = None) -> None:
        self.ggml_type = supported_type(weight.ggml_type)
        if len(weight.shape) != 2:
            raise ValueError(f"a linear weight is (out, in), got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = (int(d) for d in weight.shape)
        blocks = np.asarray(weight.data, dtype=np.uint8).reshape(
            -1, self.ggml_type.type_size)
        n_blocks = self.out_features * self.in_features // self.ggml_type.block_size
        if self.in_features % self.ggml_type.block_size or len(blocks) != n_blocks:
            raise ValueError(f"{self.ggml_type.name} weight of shape {tuple(weight.shape)} "
                             f"does not match {weight.data.size} bytes of blocks")
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        if self.bias is not None and self.bias.shape != (self.out_features,):
            raise ValueError(f"bias shape {self.bias.shape} != ({self.out_features},)")
        self.tile_rows = tile_rows or max(1, TILE_BYTES // (4 * self.in_features))
        out, nb = self.out_features, self.in_features // BLOCK
        self.scales = self.mins = self.codes = self.blocks = None
        if self.ggml_type == GGMLType.Q8_0:
            self.scales = f16_field(blocks, 0).reshape(out, nb)
            self.codes = blocks[:, 2:].view(np.int8).reshape(out, self.in_features).copy()
        elif self.ggml_type == GGMLType.Q4_0:
            self.scales = f16_field(blocks, 0).reshape(out, nb)
            self.codes = blocks[:, 2:].reshape(out, nb, 16).copy()
        elif self.ggml_type == GGMLType.Q4_1:
            self.scales = f16_field(blocks, 0).reshape(out, nb)
            self.mins = f16_field(blocks, 2).reshape(out, nb)
            self.codes = blocks[:, 4:].reshape(out, nb, 16).copy()
        else:
            self.blocks = blocks.reshape(out, -1).copy()

    @classmethod
    def from_float(cls, weight: np.ndarray, ggml_type: str | int | GGMLType = GGMLType.Q8_0,
                   bias: np.ndarray | None = None) -> QuantizedLinear:
        """Quantize an (out, in) float weight to `ggml_type` ("q8_0", "q4_0", "q4_1", ...)."""
        return cls(quantize_blocks(weight, ggml_type), bias)

    @classmethod
    def from_gguf(cls, gguf_file: GGUFFile, name: str,
                  bias: np.ndarray | None = None) -> QuantizedLinear:
        """The weight `name` of a GGUF file (shape (out, in) in NumPy order), kept packed."""
        info = gguf_file.tensors.get(name)
        raw = gguf_file.raw(name)
        return cls(RawTensor(info.ggml_type, raw, info.shape), bias)

    @property
    def nbytes(self) -> int:
        """Bytes held by the weight and bias (the shared scratch tile is not counted)."""
        arrays = (self.codes, self.scales, self.mins, self.blocks, self.bias)
        return sum(a.nbytes for a in arrays if a is not None)

    def dequantized(self) -> np.ndarray:
        """The whole (out, in) float32 weight, as `quant.dequantize` decodes it."""
        out = np.empty((self.out_features, self.in_features), dtype=np.float32)
        for start in range(0, self.out_features, self.tile_rows):
            stop = min(start + self.tile_rows, self.out_features)
            out[start:stop] = self._decode(start, stop, scaled=True)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (..., in_features) -> (..., out_features), float32."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"input's last axis is {x.shape[-1:]}, the layer takes "
                             f"{self.in_features} features")
        rows = x.reshape(-1, self.in_features)
        if self.codes is not None and len(rows) == 1:
            y = self._matvec(rows[0])[None]
        else:
            y = self._dequantized(rows)
        if self.bias is not None:
            y += self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    # ----------------------------------------------------------------------------------------

    def _decode(self, start: int, stop: int, scaled: bool) -> np.ndarray:
        """Rows start..stop of the weight in the scratch buffer: codes as floats, or (scaled)
        the weights themselves."""
        n, nb = stop - start, self.in_features // BLOCK
        tile = _scratch_buffer(n * self.in_features).reshape(n, self.in_features)
        if self.blocks is not None:
            blocks = self.blocks[start:stop].reshape(-1, self.ggml_type.type_size)
            tile[...] = FORMATS[self.ggml_type].blocks(blocks).reshape(n, self.in_features)
            return tile
        by_block = tile.reshape(n, nb, BLOCK)
        if self.ggml_type == GGMLType.Q8_0:
            tile[...] = self.codes[start:stop]
        else:  # byte j of a block: element j in the low nibble, element j + 16 in the high
            packed = self.codes[start:stop]
            by_block[:, :, :16] = packed & 0x0F
            by_block[:, :, 16:] = packed >> 4
        if scaled:
            if self.ggml_type == GGMLType.Q4_0:
                by_block -= np.float32(8)
            by_block *= self.scales[start:stop, :, None]
            if self.ggml_type == GGMLType.Q4_1:
                by_block += self.mins[start:stop, :, None]
        return tile

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        nb, in_features = self.in_features // BLOCK, self.in_features
        by_block = x.reshape(nb, BLOCK, 1)
        x_sums = by_block.sum(axis=(1, 2))                             # sum_j x_bj, (nb,)
        x_low = np.ascontiguousarray(by_block[:, :16])                # (nb, 16, 1)
        x_high = np.ascontiguousarray(by_block[:, 16:])
        y = np.empty(self.out_features, dtype=np.float32)
        for start in range(0, self.out_features, self.tile_rows):
            stop = min(start + self.tile_rows, self.out_features)
            n = stop - start
            buffer = _scratch_buffer(n * in_features)
            # partial[b, o] = sum_j q_obj x_bj: one small matrix-vector product per block b
            if self.ggml_type == GGMLType.Q8_0:
                codes = buffer.reshape(n, nb, BLOCK)
                codes[...] = self.codes[start:stop].reshape(n, nb, BLOCK)
                partial = np.matmul(codes.transpose(1, 0, 2), by_block)
            else:
                packed = self.codes[start:stop]                            # (n, nb, 16)
                low = buffer[:n * in_features // 2].reshape(n, nb, 16)
                high = buffer[n * in_features // 2:].reshape(n, nb, 16)
                nibble = _scratch_buffer(packed.size, np.uint8).reshape(packed.shape)
                low[...] = np.bitwise_and(packed, 0x0F, out=nibble)
                high[...] = np.right_shift(packed, 4, out=nibble)
                partial = (np.matmul(low.transpose(1, 0, 2), x_low)
                           + np.matmul(high.transpose(1, 0, 2), x_high))
            d = self.scales[start:stop]
            y[start:stop] = np.einsum("bo,ob->o", partial[:, :, 0], d)
            if self.ggml_type == GGMLType.Q4_0:
                y[start:stop] -= np.float32(8) * (d @ x_sums)
            elif self.ggml_type == GGMLType.Q4_1:
                y[start:stop] += self.mins[start:stop] @ x_sums
        return y

    def _dequantized(self, x: np.ndarray) -> np.ndarray:
        y = np.empty((len(x), self.out_features), dtype=np.float32)
        for start in range(0, self.out_features, self.tile_rows):
            stop = min(start + self.tile_rows, self.out_features)
            np.matmul(x, self._decode(start, stop, scaled=True).T, out=y[:, start:stop])
        return y

    def __repr__(self) -> str:
        return (f"QuantizedLinear({self.in_features} -> {self.out_features}, "
                f"{self.ggml_type.name}, {self.nbytes / 2**20:.2f} MB)")

