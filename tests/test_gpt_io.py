"""GPT-2 directories: our own round trip, a hand-written HF-layout directory, bad
directories, and (if torch + transformers are installed) interchange with GPT2LMHeadModel."""
import json

import numpy as np
import pytest

from numpylm import no_grad
from numpylm.io import load_safetensors, save_safetensors
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.gpt2_io import load_pretrained

TINY = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
IDX = np.array([[1, 5, 7, 3, 12], [0, 2, 2, 9, 4]])


def tiny() -> GPT:
    model = GPT(GPTConfig(**TINY), rng=3)
    rng = np.random.default_rng(4)
    for p in model.parameters():  # not GPT-2's init: make biases and LN weights non-trivial
        p.data[...] = rng.normal(0, 0.2, p.shape)
    return model.eval()


def logits_of(model: GPT) -> np.ndarray:
    with no_grad():
        return model(IDX)[0].data


def write_hf_layout(model: GPT, directory, **config_overrides) -> None:
    """A directory as GPT-2 implementations write it: prefixed keys, mask buffers, a tied
    lm_head.weight and GPT-2's config fields."""
    c = model.config
    tensors = {f"transformer.{k}": v for k, v in model.state_dict().items()}
    for i in range(c.n_layer):
        tensors[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))
        tensors[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["lm_head.weight"] = model.wte.weight.data
    save_safetensors(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    config = {"model_type": "gpt2", "n_layer": c.n_layer, "n_head": c.n_head,
              "n_embd": c.n_embd, "n_positions": c.block_size, "vocab_size": c.vocab_size,
              "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
              **config_overrides}
    (directory / "config.json").write_text(json.dumps(config))


def test_save_then_load_gives_identical_logits(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_positions"], config["n_embd"], config["vocab_size"]) == (8, 8, 13)
    assert all(k.startswith("transformer.") for k in load_safetensors(
        tmp_path / "model.safetensors"))
    loaded = GPT.from_pretrained(tmp_path)
    assert not loaded.training
    np.testing.assert_array_equal(logits_of(loaded), logits_of(model))


def test_hf_layout_with_buffers_and_lm_head_loads(tmp_path):
    model = tiny()
    write_hf_layout(model, tmp_path)
    np.testing.assert_array_equal(logits_of(GPT.from_pretrained(tmp_path)), logits_of(model))


def test_keys_without_prefix_load(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    tensors = {k.removeprefix("transformer."): v
               for k, v in load_safetensors(tmp_path / "model.safetensors").items()}
    save_safetensors(tensors, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(logits_of(GPT.from_pretrained(tmp_path)), logits_of(model))


def test_missing_files_are_listed(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors"):
        GPT.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        GPT.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config_are_listed(tmp_path):
    write_hf_layout(tiny(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layer"] = 3  # the file has blocks 0 and 1 only
    config["n_embd"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        GPT.from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing keys: h.2.ln_1.weight" in message
    assert "wte.weight: expected (13, 16), got (13, 8)" in message


def test_other_model_types_and_activations_are_refused(tmp_path):
    write_hf_layout(tiny(), tmp_path, model_type="llama")
    with pytest.raises(ValueError, match="model_type is 'llama'"):
        GPT.from_pretrained(tmp_path)
    write_hf_layout(tiny(), tmp_path, activation_function="relu")
    with pytest.raises(ValueError, match="activation_function 'relu'"):
        GPT.from_pretrained(tmp_path)
    write_hf_layout(tiny(), tmp_path, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="attention scaling"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ValueError, match="missing GPT-2 field"):
        GPT.from_pretrained(tmp_path)


def test_an_untied_head_is_refused(tmp_path):
    model = tiny()
    write_hf_layout(model, tmp_path)
    tensors = load_safetensors(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1.0
    save_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        GPT.from_pretrained(tmp_path)


def test_load_pretrained_with_and_without_tokenizer(tmp_path):
    from numpylm.tokenizers.interchange import bytes_to_unicode
    model = GPT(GPTConfig(**{**TINY, "vocab_size": 257}), rng=3).eval()
    model.save_pretrained(tmp_path)
    loaded, tokenizer = load_pretrained(tmp_path)
    assert tokenizer is None
    # GPT-2's file format: one entry per byte (id = byte value here) and one merge, "h i".
    vocab = {char: b for b, char in bytes_to_unicode().items()}
    vocab["hi"] = 256
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh i\n")
    loaded, tokenizer = load_pretrained(tmp_path)
    assert tokenizer.encode("hi!") == [256, ord("!")]
    with no_grad():
        np.testing.assert_array_equal(loaded(IDX)[0].data, model(IDX)[0].data)


def test_bias_free_models_cannot_be_saved_as_gpt2(tmp_path):
    with pytest.raises(ValueError, match="bias=False"):
        GPT(GPTConfig(**TINY, bias=False)).save_pretrained(tmp_path)


def test_interchange_with_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=2,
                                     n_head=2, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random, larger biases and LN weights than the HF init
        for p in hf.parameters():
            p.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = GPT.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        expected = hf(torch.tensor(IDX)).logits.numpy()
    np.testing.assert_allclose(logits_of(ours), expected, rtol=1e-4, atol=1e-5)

    ours.save_pretrained(tmp_path / "ours")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.tensor(IDX)).logits.numpy(), expected,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_expected_shapes_are_the_models_own(bias):
    """The header check compares files with expected_shapes(config) before building a model;
    it must list exactly the state dict a built model has."""
    from numpylm.models.gpt2_io import expected_shapes

    config = GPTConfig(**{**TINY, "bias": bias})
    built = {name: tuple(value.shape) for name, value in GPT(config, rng=0).state_dict().items()}
    assert expected_shapes(config) == built
