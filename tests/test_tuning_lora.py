"""LoRA: the layer's gradients (float64 finite differences), frozen weights, merge/unmerge,
injection by name, and the PEFT-layout round trip with its hostile-file errors."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpylm.autograd import Tensor
from numpylm.autograd.gradcheck import gradcheck
from numpylm.io.errors import FileFormatError
from numpylm.io.safetensors import load_safetensors, save_safetensors
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.nn import Linear
from numpylm.tuning import (LoRAConfig, LoRALinear, apply_lora, load_adapter, lora_layers,
                            merge_lora, save_adapter, trainable_parameters, unmerge_lora)


def tiny_llama(seed=0, dtype=np.float32):
    return Llama(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=32), rng=seed, dtype=dtype)


def randomise_B(model, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data[...] = rng.normal(0, scale, layer.lora_B.weight.shape)


IDS = np.random.default_rng(5).integers(0, 40, (2, 7))


def test_lora_layer_equals_its_formula():
    rng = np.random.default_rng(0)
    base = Linear(6, 5, rng=1)
    layer = LoRALinear(base, r=3, lora_alpha=6.0, rng=2)
    layer.lora_B.weight.data[...] = rng.normal(size=(5, 3))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    W, b = base.weight.data, base.bias.data
    A, B = layer.lora_A.weight.data, layer.lora_B.weight.data
    expected = x @ W.T + b + (6.0 / 3) * x @ A.T @ B.T
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-5, atol=1e-5)


def test_b_starts_at_zero_so_the_adapted_model_is_the_base():
    model = tiny_llama()
    before = model(IDS)[0].data.copy()
    apply_lora(model, LoRAConfig(r=4, target_modules=["q_proj", "v_proj"]))
    np.testing.assert_array_equal(model(IDS)[0].data, before)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_lora_layer_gradcheck(r, n_in, n_out, bias):
    rng = np.random.default_rng(r * 100 + n_in * 10 + n_out)
    base = Linear(n_in, n_out, bias=bias, dtype=np.float64, rng=rng)
    layer = LoRALinear(base, r=r, lora_alpha=2.0, rng=rng)
    layer.lora_B.weight.data[...] = rng.normal(size=layer.lora_B.weight.shape)
    x = rng.normal(size=(3, n_in))
    gradcheck(lambda x: (layer(x) * layer(x)).sum(), Tensor(x, requires_grad=True),
              params=[layer.lora_A.weight, layer.lora_B.weight])


def test_only_adapters_are_trainable_and_frozen_weights_get_no_gradient():
    model = tiny_llama()
    names = apply_lora(model, LoRAConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert names == [f"model.layers.{i}.self_attn.{p}"
                     for i in range(2) for p in ("q_proj", "v_proj")]
    trainable = [n for n, _ in trainable_parameters(model)]
    assert trainable == [f"{n}.lora_{ab}.weight" for n in names for ab in "AB"]
    randomise_B(model)
    model(IDS, IDS)[1].backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None and np.abs(p.grad).sum() > 0, name
        else:
            assert p.grad is None, name


def test_merge_and_unmerge_give_the_adapted_forward():
    model = tiny_llama(dtype=np.float64)
    apply_lora(model, LoRAConfig(r=3, lora_alpha=5, target_modules=["q_proj", "k_proj", "up_proj"]))
    randomise_B(model)
    base_q = model.model.layers[0].self_attn.q_proj.base_layer.weight.data.copy()
    adapted = model(IDS)[0].data.copy()
    merge_lora(model)
    assert not np.allclose(model.model.layers[0].self_attn.q_proj.base_layer.weight.data, base_q)
    np.testing.assert_allclose(model(IDS)[0].data, adapted, rtol=1e-10, atol=1e-10)
    unmerge_lora(model)
    np.testing.assert_allclose(model.model.layers[0].self_attn.q_proj.base_layer.weight.data,
                               base_q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model(IDS)[0].data, adapted, rtol=1e-10, atol=1e-10)


def test_decoding_an_unmerged_adapter_matches_forward():
    model = tiny_llama(dtype=np.float64)
    apply_lora(model, LoRAConfig(r=2, target_modules=["v_proj", "down_proj"]))
    randomise_B(model)
    state = model.init_state(1)
    stepped = model.step(state, IDS[:1])
    np.testing.assert_allclose(stepped[0], model(IDS[:1])[0].data[0, -1], rtol=1e-8, atol=1e-8)


def test_gpt2_conv1d_is_adapted_with_fan_in_fan_out():
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16), rng=0)
    model.to(np.float64)
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"]))
    randomise_B(model)
    ids = IDS[:, :5] % 30
    adapted = model(ids)[0].data.copy()
    merge_lora(model)
    np.testing.assert_allclose(model(ids)[0].data, adapted, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs, words", [
    ({"r": 0}, "rank"), ({"r": 2.5}, "rank"), ({"lora_alpha": 0}, "lora_alpha"),
    ({"lora_alpha": -1.0}, "lora_alpha"), ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"target_modules": []}, "target_modules"),
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        LoRAConfig(**kwargs)


def test_a_pattern_that_matches_nothing_lists_the_modules():
    with pytest.raises(ValueError, match=r"qkv.*q_proj"):
        apply_lora(tiny_llama(), LoRAConfig(target_modules=["qkv"]))
    with pytest.raises(ValueError, match=r"\['attn'\] match no linear"):
        apply_lora(tiny_llama(), LoRAConfig(target_modules=["q_proj", "attn"]))


def test_regex_target_modules_follow_peft():
    names = apply_lora(tiny_llama(), LoRAConfig(target_modules=r".*layers\.1\..*_proj"))
    assert len(names) == 7 and all(".layers.1." in n for n in names)


def test_adapter_round_trip_in_peft_layout(tmp_path):
    model = tiny_llama()
    apply_lora(model, LoRAConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    randomise_B(model)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    tensors = load_safetensors(tmp_path / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert tensors[key].shape == (4, 32)
    assert tensors[key.replace("q_proj", "v_proj").replace("lora_A", "lora_B")].shape == (16, 4)
    assert len(tensors) == 8
    other = tiny_llama()
    load_adapter(other, tmp_path, rng=99)
    np.testing.assert_array_equal(other(IDS)[0].data, model(IDS)[0].data)


@pytest.fixture
def saved(tmp_path):
    model = tiny_llama()
    apply_lora(model, LoRAConfig(r=2, target_modules=["q_proj"]))
    save_adapter(model, tmp_path)
    return tmp_path


def edit_config(path, **changes):
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, field", [
    ({"r": "8"}, "r"), ({"r": 0}, "r"), ({"lora_alpha": None}, "lora_alpha"),
    ({"lora_alpha": -2}, "lora_alpha"), ({"target_modules": 5}, "target_modules"),
    ({"target_modules": ["nonexistent"]}, "target_modules"), ({"use_dora": True}, "use_dora"),
    ({"peft_type": "IA3"}, "peft_type"), ({"lora_dropout": "x"}, "lora_dropout"),
])
def test_hostile_config_names_the_field(saved, changes, field):
    edit_config(saved, **changes)
    with pytest.raises(FileFormatError) as info:
        load_adapter(tiny_llama(), saved)
    assert info.value.field == field and "adapter_config.json" in str(info.value)


def test_hostile_tensors_name_the_key(saved):
    weights = saved / "adapter_model.safetensors"
    tensors = load_safetensors(weights)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    bad = dict(tensors, **{key: np.zeros((3, 32), np.float32)})
    save_safetensors(bad, weights)
    with pytest.raises(FileFormatError, match=r"\(3, 32\).*\(2, 32\)") as info:
        load_adapter(tiny_llama(), saved)
    assert info.value.field == key
    unknown = dict(tensors, **{"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight":
                               np.zeros((2, 32), np.float32)})
    save_safetensors(unknown, weights)
    with pytest.raises(FileFormatError, match="names no LoRA layer"):
        load_adapter(tiny_llama(), saved)
    missing = {k: v for k, v in tensors.items() if k != key}
    save_safetensors(missing, weights)
    with pytest.raises(FileFormatError, match="missing"):
        load_adapter(tiny_llama(), saved)


def test_broken_json_is_a_file_format_error(saved):
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        load_adapter(tiny_llama(), saved)
