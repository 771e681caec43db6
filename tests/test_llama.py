"""The Llama model: whole-model gradients in float64, the inference stepper against the graph,
left padding, the composed (K/V repeated) attention against the fused one, bad configs, and
the family contract (train, save, load, decode) through a family registered here."""
import numpy as np
import pytest

from numpylm import gradcheck, no_grad
from numpylm.inference import generate
from numpylm.models import llama_inference
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.tokenizers import CharTokenizer
from numpylm.training import TrainConfig, prepare_data, train
from numpylm.training.families import FAMILIES, Family, load_model, register_family

TINY = dict(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)


def tiny(**overrides) -> Llama:
    """A tiny GQA Llama whose norms and biases are not their trivial init."""
    model = Llama(LlamaConfig(**{**TINY, **overrides}), rng=1)
    rng = np.random.default_rng(2)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data[...] = 1.0 + rng.normal(0, 0.3, p.shape) if "norm" in name else \
                rng.normal(0, 0.3, p.shape)
        else:
            p.data *= 10.0  # std 0.2: attention that is not uniform
    return model.eval()


def test_whole_model_gradcheck_float64_with_gqa_and_biases():
    model = tiny(attention_bias=True, tie_word_embeddings=False).to(np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (2, 5))
    targets = rng.integers(0, 11, (2, 5))
    targets[0, 1] = -1  # ignored positions get no gradient
    gradcheck(lambda: model(idx, targets)[1], params=model.parameters(), max_elements=40)


def test_gradcheck_tied_head_multi_query():
    model = tiny(num_key_value_heads=1).to(np.float64)
    idx = np.array([[3, 1, 4, 1, 5, 9]])
    gradcheck(lambda: model(idx, np.roll(idx, -1))[1], params=model.parameters(),
              max_elements=30)


def test_composed_attention_equals_fused_in_value_and_gradient():
    fused, composed = tiny(), tiny(fused_attention=False)
    idx = np.array([[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]])
    grads = []
    for model in (fused, composed):
        model.zero_grad()
        logits, loss = model(idx, np.roll(idx, 1, axis=1))
        loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
        grads[-1]["logits"] = logits.data
    for key in grads[0]:
        np.testing.assert_allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False,
                                            "attention_bias": True},
                                       {"num_key_value_heads": 4}, {"num_key_value_heads": 1},
                                       {"head_dim": 6, "rope_theta": 500.0}])
def test_stepper_equals_forward(overrides):
    model = tiny(**overrides)
    idx = np.random.default_rng(3).integers(0, 11, (2, 9))
    with no_grad():
        full = model(idx)[0].data
    # No cache: every position at once.
    np.testing.assert_allclose(llama_inference.forward_logits(model, idx, np.arange(9)), full,
                               rtol=1e-5, atol=1e-6)
    # The prompt at once, then one token at a time through the KV cache.
    state = model.init_state(2)
    np.testing.assert_allclose(model.step(state, idx[:, :4]), full[:, 3], rtol=1e-5, atol=1e-6)
    for t in range(4, 9):
        np.testing.assert_allclose(model.step(state, idx[:, t:t + 1]), full[:, t],
                                   rtol=1e-5, atol=1e-6, err_msg=f"position {t}")
    assert state.cache.k.shape[2] == model.config.num_key_value_heads  # Hkv heads cached


def test_left_padding_matches_each_prompt_alone_in_forward_and_step():
    model = tiny()
    short, long = [5, 2, 7], [1, 3, 8, 4, 6, 10]
    ids = np.array([[0, 0, 0] + short, long])
    mask = np.array([[False] * 3 + [True] * 3, [True] * 6])
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with no_grad():
        alone = model(np.array([short]))[0].data[0]
        padded = model(ids, attention_mask=mask, position_ids=positions)[0].data
    np.testing.assert_allclose(padded[0, 3:], alone, rtol=1e-5, atol=1e-6)
    state = model.init_state(2)
    np.testing.assert_allclose(model.step(state, ids, mask)[0], alone[-1], rtol=1e-5,
                               atol=1e-6)
    # A grouped-query padded batch decodes each row as it would alone.
    out = generate(model, [short, long], 5, temperature=0)
    np.testing.assert_array_equal(out[0], generate(model, short, 5, temperature=0))
    np.testing.assert_array_equal(out[1], generate(model, long, 5, temperature=0))


def test_decoding_past_the_context_slides_the_window():
    model = tiny(max_position_embeddings=8)
    stepped = generate(model, [1, 2, 3], 12, temperature=0)
    rerun = generate(model, [1, 2, 3], 12, temperature=0, use_cache=False)
    np.testing.assert_array_equal(stepped, rerun)


def test_rope_makes_position_matter_and_is_causal():
    model = tiny()
    with no_grad():
        a = model(np.array([[1, 2, 3, 4]]))[0].data
        b = model(np.array([[1, 2, 3, 9]]))[0].data
        c = model(np.array([[2, 1, 3, 4]]))[0].data
    np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-6)  # the future is invisible
    assert not np.allclose(a[0, 2], c[0, 2], atol=1e-4)  # order changes what token 3 sees


def test_parameter_names_and_shapes_follow_hf():
    model = Llama(LlamaConfig(**TINY, tie_word_embeddings=False), rng=0)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes["model.embed_tokens.weight"] == (11, 8)
    assert shapes["model.layers.1.self_attn.q_proj.weight"] == (8, 8)  # (out, in)
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == (4, 8)  # 2 KV heads of 2
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (8, 12)
    assert shapes["lm_head.weight"] == (11, 8) and "model.norm.weight" in shapes
    assert len(shapes) == 1 + 2 * 9 + 2
    # 11*8 embed + 2 * (2*8 norms + 8*8 + 2*4*8 + 8*8 + 3*8*12) + 8 norm + 11*8 head
    assert model.num_parameters() == 88 + 2 * (16 + 64 + 64 + 64 + 288) + 8 + 88


@pytest.mark.parametrize("overrides, field", [
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"hidden_size": 10}, "hidden_size"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 3}, "head_dim"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
])
def test_bad_configs_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        LlamaConfig(**{**TINY, **overrides})


def test_head_dim_given_need_not_divide_hidden_size():
    config = LlamaConfig(**{**TINY, "hidden_size": 10, "head_dim": 4})
    assert config.head_dim == 4 and config.num_key_value_heads == 2


def test_forward_refuses_a_sequence_longer_than_the_context():
    with pytest.raises(ValueError, match="max_position_embeddings 16"):
        tiny()(np.zeros((1, 17), dtype=np.int64))


TEXT = "the cat sat on the mat. the dog sat on the log. " * 20


def _llama_family(**args):
    return Llama(LlamaConfig(**args))


def test_family_trains_saves_loads_and_decodes(tmp_path):
    register_family(Family("llama_test", _llama_family))
    try:
        tok = CharTokenizer.from_text(TEXT)
        args = dict(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                    num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=16)
        model = _llama_family(**args)
        train(model, prepare_data(tok, text=TEXT),
              TrainConfig(steps=2, batch_size=2, block_size=16, eval_interval=2,
                          eval_batches=1, log_interval=1, out_dir=str(tmp_path / "ck")),
              tokenizer=tok, model_family="llama_test", model_args=args, log=lambda s: None)
        loaded = load_model(tmp_path / "ck")
        assert isinstance(loaded.model, Llama) and loaded.block_size == 16
        prompt = np.array([tok.encode("the cat")])
        np.testing.assert_allclose(loaded.model.step(loaded.model.init_state(1), prompt),
                                   model.step(model.init_state(1), prompt), rtol=1e-6)
        stepped = generate(loaded.model, tok.encode("the"), 20, temperature=0)
        rerun = generate(loaded.model, tok.encode("the"), 20, temperature=0, use_cache=False)
        np.testing.assert_array_equal(stepped, rerun)
    finally:
        FAMILIES.pop("llama_test", None)


@pytest.mark.parametrize("C, L, H, T", [(16, 1, 2, 16), (64, 2, 4, 64), (128, 4, 4, 64)])
def test_gpt_budget_width_gives_a_gpt2_parameter_count(C, L, H, T):
    from numpylm.models.gpt import GPT, GPTConfig
    from numpylm.models.llama import gpt_budget_intermediate_size

    gpt = GPT(GPTConfig(vocab_size=65, block_size=T, n_layer=L, n_head=H, n_embd=C), rng=0)
    llama = Llama(LlamaConfig(vocab_size=65, hidden_size=C, num_hidden_layers=L,
                              num_attention_heads=H, max_position_embeddings=T,
                              intermediate_size=gpt_budget_intermediate_size(C, L, T)), rng=0)
    # I is rounded to an integer: off by at most half a unit of I, 3 C L / 2 parameters.
    assert abs(llama.num_parameters() - gpt.num_parameters()) <= 3 * C * L / 2


def test_decoding_steps_take_the_free_cores_and_restore_the_count(monkeypatch):
    """Decoding takes every free core, one when another process is busy; the count in
    force before the step is restored after it; NUMPYLM_THREADS overrides."""
    from numpylm import blas

    if blas.get_threads() is None:
        pytest.skip("no OpenBLAS found")
    model = tiny()
    seen = []
    real = llama_inference.forward_logits
    monkeypatch.setattr(llama_inference, "forward_logits",
                        lambda *a, **k: seen.append(blas.get_threads()) or real(*a, **k))
    monkeypatch.setattr(blas, "available_cores", lambda: 2)
    monkeypatch.setattr(blas, "busy_recently", lambda max_age=1.0: 1.0)  # a busy neighbour
    with blas.threads(2):
        state = model.init_state(1)
        model.step(state, np.array([[1, 2, 3]]))
        model.step(state, np.array([[4]]))
        assert blas.get_threads() == 2
    assert seen == [1, 1]
    monkeypatch.setattr(blas, "busy_recently", lambda max_age=1.0: 0.0)  # an idle machine
    with blas.threads(1):
        model.step(model.init_state(1), np.array([[4]]))
        assert blas.get_threads() == 1
    assert seen[-1] == 2
    monkeypatch.setenv("NUMPYLM_THREADS", "1")  # the override wins
    model.step(model.init_state(1), np.array([[4]]))
    assert seen[-1] == 1


def test_stepper_refuses_to_overfill_a_cache():
    model = tiny()
    cache = model.init_kv_cache(1, max_length=4)
    llama_inference.forward_logits(model, np.array([[1, 2, 3]]), np.arange(3), cache)
    with pytest.raises(ValueError, match="3 cached \\+ 2 new tokens exceed its max_length 4"):
        llama_inference.forward_logits(model, np.array([[4, 5]]), np.arange(3, 5), cache)
