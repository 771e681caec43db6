"""QLoRA: LoRA over a quantized frozen base: logits close to the float model, gradients through
the quantized matrices to the adapters, no merge, and the memory it saves."""
import numpy as np
import pytest

from numpylm.autograd import Tensor
from numpylm.autograd.gradcheck import gradcheck
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.nn import Linear
from numpylm.quant import dequantize, quantize_blocks
from numpylm.tuning import LoRAConfig, LoRALinear, lora_layers, merge_lora
from numpylm.tuning.qlora import FrozenQuantizedLinear, apply_qlora, model_bytes


def tiny(seed=0):
    return Llama(LlamaConfig(vocab_size=40, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=32), rng=seed)


IDS = np.random.default_rng(1).integers(0, 40, (2, 8))


@pytest.mark.parametrize("kind, tol", [("q8_0", 0.02), ("q4_0", 0.3)])
def test_quantized_base_stays_close_and_starts_as_the_base(kind, tol):
    model = tiny()
    reference = model(IDS)[0].data.copy()
    apply_qlora(model, LoRAConfig(r=4, target_modules=["q_proj", "v_proj"]), kind)
    quantized = [m for m in model.modules() if isinstance(m, FrozenQuantizedLinear)]
    assert len(quantized) == 14  # 7 projections x 2 layers
    logits = model(IDS)[0].data
    assert 0 < np.abs(logits - reference).max() < tol


def test_quantized_layer_computes_with_the_dequantized_weight():
    linear = Linear(64, 8, rng=0)
    layer = FrozenQuantizedLinear.from_linear(linear, "q8_0")
    raw = quantize_blocks(linear.weight.data, "q8_0")
    w = dequantize(raw.data, raw.ggml_type, raw.shape)
    x = np.random.default_rng(0).normal(size=(3, 64))
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ w.T + linear.bias.data, rtol=1e-6)
    # the gradient to the input goes through W (float64 finite differences)
    lora = LoRALinear(layer, r=2, lora_alpha=4, rng=0)
    lora.to(np.float64)
    lora.lora_B.weight.data[...] = 0.5
    gradcheck(lambda x: (lora(x) ** 2).sum(), Tensor(x, requires_grad=True),
              params=[lora.lora_A.weight, lora.lora_B.weight])


def test_adapters_below_a_quantized_layer_get_gradients():
    model = tiny()
    apply_qlora(model, LoRAConfig(r=2, target_modules=["q_proj"]), "q4_0")
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data[...] = 0.1
    model(IDS, IDS)[1].backward()
    first = model.model.layers[0].self_attn.q_proj
    assert np.abs(first.lora_A.weight.grad).sum() > 0
    with pytest.raises(ValueError, match="quantized"):
        merge_lora(model)


def test_decoding_a_qlora_model_matches_forward():
    model = tiny()
    apply_qlora(model, LoRAConfig(r=2, target_modules=["v_proj"]), "q8_0")
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data[...] = 0.1
    stepped = model.step(model.init_state(1), IDS[:1])
    np.testing.assert_allclose(stepped[0], model(IDS[:1])[0].data[0, -1], rtol=1e-4, atol=1e-4)


def test_memory_of_the_frozen_base_shrinks():
    float_model = tiny()
    float_bytes = sum(p.data.nbytes for n, p in float_model.named_parameters() if "layers" in n
                      and n.endswith("_proj.weight"))
    model = tiny()
    apply_qlora(model, LoRAConfig(r=2, target_modules=["q_proj"]), "q8_0")
    sizes = model_bytes(model)
    # Q8_0 in memory: an int8 code per weight and one float32 scale per 32 weights (9 bits;
    # 8.5 on disk, where the scale is float16)
    assert sizes["quantized"] == float_bytes * 9 // 32
    assert sizes["trainable"] == 2 * (2 * 64 + 64 * 2) * 4  # 2 layers: A (2, 64), B (64, 2)
