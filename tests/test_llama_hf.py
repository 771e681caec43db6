"""HF checkpoint directories of the Llama layout: our own round trip (single file and shards),
stored HF logits (no torch needed), bad directories, and, where torch + transformers are
installed, logits equal to LlamaForCausalLM's and Qwen2ForCausalLM's in both directions."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from numpylm import no_grad
from numpylm.io import save_safetensors
from numpylm.io.errors import FileFormatError
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.models.llama_io import config_from_hf, from_pretrained, save_pretrained

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(vocab_size=13, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
IDX = np.array([[1, 5, 7, 3, 12, 0], [0, 2, 2, 9, 4, 11]])


def tiny(**overrides) -> Llama:
    model = Llama(LlamaConfig(**{**TINY, **overrides}), rng=3)
    rng = np.random.default_rng(4)
    for p in model.parameters():  # norms and biases away from their trivial init
        p.data[...] = rng.normal(0, 0.3, p.shape) + (1.0 if p.ndim == 1 else 0.0)
    return model.eval()


def logits_of(model: Llama, idx=IDX) -> np.ndarray:
    with no_grad():
        return model(idx)[0].data


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False},
                                       {"attention_bias": True, "num_key_value_heads": 1}])
def test_save_load_gives_identical_logits(tmp_path, overrides):
    model = tiny(**overrides)
    save_pretrained(model, tmp_path)
    again = from_pretrained(tmp_path)
    np.testing.assert_array_equal(logits_of(again), logits_of(model))
    assert again.config == model.config


def test_sharded_directory_round_trips_and_names_a_missing_shard(tmp_path):
    model = tiny(tie_word_embeddings=False)
    model.save_pretrained(str(tmp_path), max_shard_bytes=1500)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (tmp_path / "model.safetensors").exists()
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    np.testing.assert_array_equal(logits_of(Llama.from_pretrained(str(tmp_path))),
                                  logits_of(model))
    (tmp_path / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=shards[1]):
        from_pretrained(tmp_path)


def test_bf16_and_f16_weights_load_widened_to_float32(tmp_path):
    model = tiny()
    save_pretrained(model, tmp_path)
    state = model.state_dict()
    for dtype in ("BF16", "F16"):
        save_safetensors(state, tmp_path / "model.safetensors", dtypes={k: dtype for k in state})
        again = from_pretrained(tmp_path)
        assert again.model.embed_tokens.weight.dtype == np.float32
        rounded = tiny()
        for k, p in rounded.state_dict().items():
            p[...] = (p.astype(np.float16) if dtype == "F16" else
                      ((p.view(np.uint32) + 0x7FFF + ((p.view(np.uint32) >> 16) & 1))
                       & 0xFFFF0000).view(np.float32))  # round to nearest even bfloat16
        np.testing.assert_array_equal(logits_of(again), logits_of(rounded), err_msg=dtype)


def test_weights_that_do_not_fit_list_every_problem(tmp_path):
    model = tiny()
    save_pretrained(model, tmp_path)
    state = dict(model.state_dict())
    del state["model.norm.weight"]
    state["model.layers.0.mlp.up_proj.weight"] = np.zeros((5, 8), np.float32)
    state["model.layers.9.extra"] = np.zeros(2, np.float32)
    save_safetensors(state, tmp_path / "model.safetensors")
    with pytest.raises(FileFormatError) as err:
        from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing keys: model.norm.weight" in message
    assert "unexpected keys: model.layers.9.extra" in message
    assert "model.layers.0.mlp.up_proj.weight: expected (12, 8), got (5, 8)" in message


def test_a_lying_config_is_refused_before_allocating(tmp_path):
    save_pretrained(tiny(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 4_000_000  # 4M x 8 floats would be allocated by a naive loader
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileFormatError, match=r"embed_tokens.weight: expected \(4000000, 8\)"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("change, field", [
    ({"model_type": "gpt2"}, "model_type"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling"),
    ({"num_hidden_layers": -1}, "num_hidden_layers"),
    ({"model_type": "mistral", "sliding_window": 4}, "sliding_window"),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8}, "sliding_window"),
    ({"mlp_bias": True}, "mlp_bias"),
])
def test_bad_config_fields_are_named(change, field):
    hf = {"model_type": "llama", **TINY, **change}
    with pytest.raises(FileFormatError, match=field):
        config_from_hf(hf, "config.json")


def test_config_reads_both_rope_forms_and_mistral_without_a_window():
    old = config_from_hf({**TINY, "model_type": "llama", "rope_theta": 5e5,
                          "rope_scaling": {"type": "llama3", "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 8}})
    new = config_from_hf({**TINY, "model_type": "llama",
                          "rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3",
                                              "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 8}})
    assert old.rope_theta == new.rope_theta == 5e5
    assert old.rope_scaling["factor"] == new.rope_scaling["factor"] == 8.0
    mistral = config_from_hf({**TINY, "architectures": ["MistralForCausalLM"],
                              "sliding_window": None})
    assert not mistral.attention_bias and not mistral.tie_word_embeddings
    qwen = config_from_hf({**TINY, "model_type": "qwen2", "sliding_window": 4,
                           "use_sliding_window": False})
    assert qwen.attention_bias  # Qwen2 always has q/k/v biases


def _fixture_module():
    spec = importlib.util.spec_from_file_location("llama_make_hf_logits",
                                                  FIXTURES / "llama_make_hf_logits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", range(2))
def test_stored_hf_logits_are_reproduced(tmp_path, case):
    """Logits HF transformers computed (tests/fixtures/llama_make_hf_logits.py) for a Llama
    with Llama 3 RoPE scaling and an untied head, and a tied multi-query Qwen2 with biases."""
    data = json.loads((FIXTURES / "llama_hf_logits.json").read_text())["cases"][case]
    (tmp_path / "config.json").write_text(json.dumps(data["config"]))
    save_safetensors(_fixture_module().weights(data["tensors"], data["seed"]),
                     tmp_path / "model.safetensors")
    model = from_pretrained(tmp_path)
    np.testing.assert_allclose(logits_of(model, np.array(data["ids"])), data["logits"],
                               rtol=1e-5, atol=1e-5)


# ---- against HF transformers, when installed ---------------------------------------------

HF_CASES = [("LlamaForCausalLM", {"tie_word_embeddings": True}),
            ("LlamaForCausalLM", {"tie_word_embeddings": False, "num_key_value_heads": 1}),
            ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
            ("Qwen2ForCausalLM", {"tie_word_embeddings": False})]


def _hf_model(arch: str, overrides: dict, seed: int):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    fields = {**dict(vocab_size=29, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                     rms_norm_eps=1e-6), **overrides}
    config = getattr(transformers, arch.replace("ForCausalLM", "Config"))(
        **fields, attn_implementation="eager")
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # HF inits norms to 1 and biases to 0: make them matter
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == 16 else 0))
    return torch, model


@pytest.mark.parametrize("arch, overrides", HF_CASES)
def test_hf_saves_numpylm_loads(tmp_path, arch, overrides):
    torch, hf = _hf_model(arch, overrides, seed=0)
    hf.save_pretrained(tmp_path)
    ids = np.random.default_rng(0).integers(0, 29, (2, 12))
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits_of(from_pretrained(tmp_path), ids), want,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch, overrides", HF_CASES)
def test_numpylm_saves_hf_loads(tmp_path, arch, overrides):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tiny(vocab_size=29, hidden_size=16, intermediate_size=24,
                 attention_bias=arch.startswith("Qwen2"), **overrides)
    save_pretrained(model, tmp_path, model_type="qwen2" if arch.startswith("Qwen2") else None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    assert type(hf).__name__ == arch
    ids = np.random.default_rng(1).integers(0, 29, (2, 12))
    with torch.no_grad():
        got = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, logits_of(model, ids), rtol=1e-5, atol=1e-5)


def test_hf_sharded_bf16_checkpoint_loads(tmp_path):
    torch, hf = _hf_model("LlamaForCausalLM", {"tie_word_embeddings": False}, seed=1)
    hf = hf.to(torch.bfloat16)
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    # The bf16 weights widened exactly, RoPE's tables in float32 (a bf16 model's .float()
    # would keep its inv_freq buffer rounded to bf16): the model numpylm should load.
    hf = type(hf).from_pretrained(tmp_path, dtype=torch.float32,
                                  attn_implementation="eager").eval()
    ids = np.random.default_rng(2).integers(0, 29, (1, 10))
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits_of(from_pretrained(tmp_path), ids), want,
                               rtol=1e-5, atol=1e-5)


def test_load_pretrained_returns_the_directory_tokenizer(tmp_path):
    from numpylm.models.pretrained import load_pretrained, pretrained_kind

    model = tiny()
    save_pretrained(model, tmp_path)
    assert pretrained_kind(tmp_path) == "llama" and pretrained_kind(tmp_path / "nowhere") is None
    assert load_pretrained(tmp_path)[1] is None  # no tokenizer.json: no tokenizer
    tokens = ["h", "e", "l", "o", "he", "ll", "hell", "hello"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ["h e", "l l", "he ll", "hell o"]}}))
    again, tokenizer = load_pretrained(tmp_path)
    assert tokenizer.encode("hello") == [7]  # h e -> he, l l -> ll, he ll -> hell, + o
    np.testing.assert_array_equal(logits_of(again), logits_of(model))
    save_pretrained(tiny(vocab_size=6), tmp_path / "small")
    (tmp_path / "small" / "tokenizer.json").write_text((tmp_path / "tokenizer.json").read_text())
    with pytest.raises(FileFormatError, match="8 tokens but the model only 6"):
        load_pretrained(tmp_path / "small")
