"""GPT: shapes and names, whole-model gradient check, fused vs composed attention, causality,
initialisation, parameter and FLOP counts, bad input."""
import contextlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import gradcheck, no_grad
from numpylm.autograd.ops_linear import conv1d
from numpylm.models.gpt import GPT, GPTConfig
from op_coverage import covers_op

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny(**overrides) -> GPT:
    return GPT(GPTConfig(**{**TINY, **overrides}), rng=0)


def test_gpt2_names_and_shapes():
    """Per block with C = 8: c_attn (C, 3C) = (8, 24), c_proj (8, 8), c_fc (8, 32), mlp
    c_proj (32, 8): Conv1D weights are (in, out)."""
    shapes = {k: v.shape for k, v in tiny().state_dict().items()}
    assert shapes["wte.weight"] == (11, 8) and shapes["wpe.weight"] == (8, 8)
    assert shapes["h.1.attn.c_attn.weight"] == (8, 24)
    assert shapes["h.1.attn.c_attn.bias"] == (24,)
    assert shapes["h.0.attn.c_proj.weight"] == (8, 8)
    assert shapes["h.0.mlp.c_fc.weight"] == (8, 32)
    assert shapes["h.0.mlp.c_proj.weight"] == (32, 8)
    assert shapes["ln_f.weight"] == (8,) and shapes["h.0.ln_2.bias"] == (8,)
    assert "lm_head.weight" not in shapes  # tied to wte
    # 12 tensors per block + wte, wpe, ln_f.weight, ln_f.bias
    assert len(shapes) == 2 * 12 + 4


def test_parameter_count_by_hand():
    """V=11, T=8, C=8, L=2: embeddings 11*8 + 8*8 = 152; per block: 2 LayerNorms 2*16 = 32,
    c_attn 8*24 + 24 = 216, c_proj 64 + 8 = 72, c_fc 8*32 + 32 = 288, mlp c_proj 256 + 8 = 264,
    total 872; ln_f 16. 152 + 2*872 + 16 = 1912."""
    model = tiny()
    assert model.num_parameters() == 1912
    assert model.num_parameters(exclude_embeddings=True) == 1912 - 64


def test_flops_per_token_by_hand():
    """Forward: 2 (12 L C^2 + V C) + 4 L T C = 2 (12*2*64 + 88) + 4*2*8*8 = 3248 + 512 = 3760;
    training is three times that."""
    model = tiny()
    assert model.flops_per_token(training=False) == 3760
    assert model.flops_per_token() == 3 * 3760


def test_forward_shapes_and_initial_loss():
    model = tiny(vocab_size=50)
    idx = np.random.default_rng(0).integers(0, 50, (3, 8))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 8, 50) and logits.dtype == np.float32
    # Small initial weights give nearly uniform predictions: loss close to ln V.
    assert abs(loss.item() - math.log(50)) < 0.1
    assert model(idx)[1] is None


def test_gpt2_initialisation_statistics():
    """Weights N(0, 0.02); residual projections N(0, 0.02 / sqrt(2 L)); biases 0; LN (1, 0)."""
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=64), rng=0)
    sd = model.state_dict()
    assert abs(sd["wte.weight"].std() - 0.02) < 0.001
    assert abs(sd["h.3.mlp.c_fc.weight"].std() - 0.02) < 0.001
    assert abs(sd["h.3.attn.c_proj.weight"].std() - 0.02 / 4) < 0.0004
    assert abs(sd["h.3.mlp.c_proj.weight"].std() - 0.02 / 4) < 0.0003
    assert not sd["h.0.attn.c_attn.bias"].any()
    assert (sd["h.0.ln_1.weight"] == 1).all() and not sd["ln_f.bias"].any()


def test_whole_model_gradcheck_float64():
    model = tiny(n_layer=1).to(np.float64)
    # Larger weights than GPT-2's init, so that every path carries a visible gradient.
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape)
    idx = np.array([[1, 4, 2, 9, 0], [3, 3, 7, 10, 5]])
    targets = np.roll(idx, -1, axis=1)
    gradcheck(lambda: model(idx, targets)[1], params=list(model.parameters()),
              max_elements=12, n_directions=3)


def test_fused_and_composed_attention_give_the_same_model():
    fused = tiny(n_layer=2).to(np.float64)
    composed = tiny(n_layer=2, fused_attention=False).to(np.float64)
    composed.load_state_dict(fused.state_dict())
    idx = np.random.default_rng(2).integers(0, 11, (2, 7))
    grads = []
    for model in (fused, composed):
        logits, loss = model(idx, idx)
        loss.backward()
        grads.append((logits.data, [p.grad for p in model.parameters()]))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads[0][1], grads[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_position_never_sees_the_future():
    model = tiny()
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    changed = idx.copy()
    changed[0, 4] = 9  # change token 4: logits at positions 0..3 must not move
    with no_grad():
        a, b = model(idx)[0].data, model(changed)[0].data
    np.testing.assert_array_equal(a[0, :4], b[0, :4])
    assert not np.allclose(a[0, 4:], b[0, 4:])


def test_dropout_zero_and_eval_mode_are_deterministic():
    model = tiny(dropout=0.3)
    idx = np.array([[1, 2, 3]])
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].data, model(idx)[0].data)
    model.train()
    assert not np.array_equal(model(idx)[0].data, model(idx)[0].data)


def test_no_bias_variant_has_no_bias_parameters():
    names = tiny(bias=False).state_dict()
    assert not any(n.endswith(".bias") for n in names)


def test_ignored_targets():
    """Targets of -1 do not count: the loss over [t0, -1] equals the loss of t0 alone."""
    model = tiny()
    idx = np.array([[1, 2]])
    logits, loss = model(idx, np.array([[3, -1]]))
    logp = logits.data[0, 0] - np.log(np.exp(logits.data[0, 0]).sum())
    assert loss.item() == pytest.approx(-logp[3], rel=1e-5)


def test_keyword_construction():
    assert GPT(**TINY, rng=0).config == GPTConfig(**TINY)
    with pytest.raises(TypeError, match="not both"):
        GPT(GPTConfig(**TINY), n_layer=3)


def test_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="integer token ids"):
        model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(np.array([[0, 11]]))
    with pytest.raises(ValueError, match="must divide"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


@covers_op("conv1d")
@settings(max_examples=15)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 4),
       st.integers(1, 4), st.booleans(), st.integers(0, 2**32 - 1))
def test_conv1d_gradients_and_value(lead, n_in, n_out, with_bias, seed):
    """conv1d(x, W, b) = x @ W + b, whatever the leading axes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, n_in))
    w = rng.standard_normal((n_in, n_out))
    b = rng.standard_normal(n_out) if with_bias else None
    expected = x @ w + (0.0 if b is None else b)
    np.testing.assert_allclose(conv1d(x, w, b).data, expected, rtol=1e-12, atol=1e-12)
    if b is None:
        gradcheck(lambda x, w: conv1d(x, w), x, w)
    else:
        gradcheck(conv1d, x, w, b)


def test_no_grad_numpy_path_equals_the_autograd_path():
    """Under no_grad, GPT.forward runs its plain-numpy twin (gpt_inference); with gradients
    recorded it runs the ops. Same logits, whole sequences and with a cache and a mask."""
    model = tiny(n_layer=2).eval()
    rng = np.random.default_rng(4)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape)
    idx = rng.integers(0, 11, (2, 7))
    mask = np.ones((2, 7), dtype=bool)
    mask[0, :2] = False  # row 0 is left-padded by two tokens
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    results = []
    for recording in (True, False):
        with (no_grad() if not recording else contextlib.nullcontext()):
            full = model(idx, attention_mask=mask, position_ids=positions)[0].data
            cache = model.init_kv_cache(2)
            first = model(idx[:, :4], kv_cache=cache, attention_mask=mask[:, :4],
                          position_ids=positions[:, :4])[0].data
            rest = model(idx[:, 4:], kv_cache=cache, attention_mask=mask,
                         position_ids=positions[:, 4:], last_only=True)[0].data
        results.append((full, first, rest))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][0][:, :4], results[0][1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][0][:, -1:], results[0][2], rtol=1e-5, atol=1e-6)


def test_the_same_rng_seed_builds_the_same_model():
    a, b = tiny(), tiny()
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert not np.array_equal(GPT(GPTConfig(**TINY), rng=1).wte.weight.data,
                              a.wte.weight.data)
