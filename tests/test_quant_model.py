"""quantize_weights rounds every matrix of a model through a block format in place: what the
model computes afterwards is what a decoder of the packed weights computes."""
import numpy as np
import pytest

from numpylm.models.gpt import GPT, GPTConfig
from numpylm.quant import dequantize, quantize_blocks, quantize_weights


def tiny_gpt():
    return GPT(GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=2, n_embd=64), rng=3)


def test_every_matrix_is_rounded_and_vectors_are_kept():
    model = tiny_gpt()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    report = quantize_weights(model, "q8_0")
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert set(report.quantized) == matrices and not report.kept
    for name, p in model.named_parameters():
        if p.ndim == 2:  # exactly the decoded packed matrix
            raw = quantize_blocks(before[name], "q8_0")
            np.testing.assert_array_equal(p.data, dequantize(raw.data, raw.ggml_type, raw.shape))
        else:
            np.testing.assert_array_equal(p.data, before[name])
    assert report.packed_bytes / report.float32_bytes == pytest.approx(34 / 128)  # 34 B / 32


def test_fewer_bits_move_the_logits_further():
    ids = np.array([[5, 9, 33, 2, 71, 40, 8, 1]])
    reference = tiny_gpt()(ids)[0].data
    moved = {}
    for kind in ("f16", "q8_0", "q4_1", "q4_0"):
        model = tiny_gpt()
        report = quantize_weights(model, kind)
        moved[kind] = np.abs(model(ids)[0].data - reference).max()
        assert report.worst_relative_error < {"f16": 1e-3, "q8_0": 0.01, "q4_1": 0.12,
                                              "q4_0": 0.15}[kind]
    assert moved["f16"] < moved["q8_0"] < moved["q4_0"]


def test_rows_that_are_not_whole_blocks_are_kept():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=20), rng=0)
    report = quantize_weights(model, "q4_0")
    assert report.quantized == [] and "wte.weight" in report.kept
