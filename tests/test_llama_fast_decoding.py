"""The Llama stepper's fast path: q/k/v and gate/up multiplied as one matrix each, and RoPE
rows from a table, proven to give `Llama.forward`'s logits however the weights change."""
import copy

import numpy as np
import pytest

from numpylm import no_grad
from numpylm.autograd.ops_rope import rope_tables
from numpylm.autograd.ops_attention import RECENT_TOKENS
from numpylm.models import llama_inference
from numpylm.models.decoding import transformer_step
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.nn import Parameter
from numpylm.optim import AdamW

TINY = dict(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
IDS = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])


def tiny(**overrides) -> Llama:
    model = Llama(LlamaConfig(**{**TINY, **overrides}), rng=1)
    rng = np.random.default_rng(2)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.4, p.shape) + (1.0 if p.ndim == 1 else 0.0)
    return model.eval()


def assert_step_equals_forward(model: Llama, atol: float = 1e-5) -> None:
    """The prompt, then one token at a time, against the graph's logits. In float32 the
    stepper's products sum in another order than the graph's (o and gate/up are stored
    (in, out)), so they agree to float32 rounding; the float64 run in the first test below
    holds them to 1e-12."""
    with no_grad():
        full = model(IDS)[0].data
    state = model.init_state(2)
    np.testing.assert_allclose(model.step(state, IDS[:, :3]), full[:, 2], rtol=1e-5, atol=atol)
    for t in range(3, IDS.shape[1]):
        np.testing.assert_allclose(model.step(state, IDS[:, t:t + 1]), full[:, t], rtol=1e-5,
                                   atol=atol, err_msg=f"position {t}")


@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True},
                                       {"num_key_value_heads": 1, "head_dim": 6}])
def test_projections_are_laid_side_by_side_and_the_logits_stay(overrides):
    assert_step_equals_forward(tiny(**overrides).to(np.float64), atol=1e-12)
    model = tiny(**overrides)
    names = [n for n, _ in model.named_parameters()]
    assert_step_equals_forward(model)
    assert [n for n, _ in model.named_parameters()] == names  # the same parameters, by name
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        qkv = [a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data]
        assert qkv[0].base is not None and all(w.base is qkv[0].base for w in qkv)
        assert qkv[0].base.shape == (sum(w.shape[0] for w in qkv), model.config.hidden_size)
        np.testing.assert_array_equal(qkv[0].base, np.concatenate(qkv))
        # gate/up and o are stored (in, out): their parameters are transposed views of it.
        gate, up = m.gate_proj.weight.data, m.up_proj.weight.data
        assert gate.base is up.base is not None
        assert gate.base.shape == (model.config.hidden_size, gate.shape[0] + up.shape[0])
        np.testing.assert_array_equal(gate.base, np.concatenate([gate, up]).T)
        o = a.o_proj.weight.data
        assert o.base is not None and o.base.shape == o.shape[::-1]
        np.testing.assert_array_equal(o.base, o.T)
        assert o.base.flags.c_contiguous and gate.base.flags.c_contiguous
        if model.config.attention_bias:
            assert a.q_proj.bias.data.base is a.v_proj.bias.data.base is not None


@pytest.mark.parametrize("tied", [True, False])
def test_the_lm_head_is_stored_transposed_and_training_gets_c_order_back(tied):
    """Decoding stores the head's (V, C) matrix as (C, V) (the tied embedding's too: its
    rows are then looked up with a stride); logits stay; a training step starts from
    C-ordered arrays again, and the next step lays the head out anew."""
    from numpylm.training import TrainConfig, train
    from numpylm.training.data import TokenData
    model = tiny(tie_word_embeddings=tied)
    assert_step_equals_forward(model)
    head = model.head_weight()
    assert head.shape == (11, 8) and head.flags.f_contiguous and not head.flags.c_contiguous
    assert head.base is not None and head.base.flags.c_contiguous
    assert (model.lm_head is None) == tied
    ids = np.random.default_rng(0).integers(0, 11, 400)
    data = TokenData(train=ids[:360], val=ids[360:], val_chars=40, val_bytes=40, source="ids")
    train(model, data, TrainConfig(steps=1, batch_size=2, block_size=8, log_interval=1,
                                   eval_interval=1, eval_batches=1), log=lambda line: None)
    assert all(p.data.flags.c_contiguous for p in model.parameters())
    assert model not in llama_inference._PLANS  # the old matrices are let go
    model.eval()
    assert_step_equals_forward(model)
    assert model.head_weight().flags.f_contiguous


def test_weights_changed_in_place_or_replaced_reach_the_next_step():
    model = tiny(attention_bias=True)
    assert_step_equals_forward(model)  # laid out now
    layer = model.model.layers[1]
    layer.self_attn.k_proj.weight.data *= 1.7  # in place: the view writes the shared matrix
    layer.mlp.up_proj.weight.data[0] += 0.5  # a row of up: a column of the (in, out) matrix
    layer.self_attn.o_proj.weight.data[:, 1] -= 0.25
    assert_step_equals_forward(model)
    layer.self_attn.o_proj.weight.data = rng_o = np.random.default_rng(8).normal(
        0, 0.5, (8, 8)).astype(np.float32)
    assert_step_equals_forward(model)
    assert layer.self_attn.o_proj.weight.data.base is not None  # laid out again
    np.testing.assert_array_equal(layer.self_attn.o_proj.weight.data, rng_o)
    rng = np.random.default_rng(9)
    layer.self_attn.q_proj.weight.data = rng.normal(0, 0.5, (8, 8)).astype(np.float32)
    layer.self_attn.v_proj.bias.data = rng.normal(0, 0.5, 4).astype(np.float32)
    layer.mlp.gate_proj.weight.data = rng.normal(0, 0.5, (12, 8)).astype(np.float32)
    assert_step_equals_forward(model)
    layer.self_attn.k_proj.weight = Parameter(rng.normal(0, 0.5, (4, 8)), np.float32)
    assert_step_equals_forward(model)  # a new parameter object, not only new data


def test_training_after_decoding_updates_what_the_stepper_reads():
    model = tiny()
    assert_step_equals_forward(model)
    model.train()
    opt = AdamW(model.parameters(), lr=0.05)
    for _ in range(3):
        _, loss = model(IDS, np.roll(IDS, -1, axis=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_step_equals_forward(model.eval())


def test_a_copy_decodes_on_its_own_arrays():
    model = tiny()
    assert_step_equals_forward(model)
    with no_grad():
        before = model(IDS)[0].data
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.data *= 0.5
    assert_step_equals_forward(twin)
    assert_step_equals_forward(model)
    with no_grad():
        np.testing.assert_array_equal(model(IDS)[0].data, before)


def test_a_wrapped_projection_is_multiplied_alone():
    lora = pytest.importorskip("numpylm.tuning.lora")
    model = tiny()
    assert_step_equals_forward(model)
    attn = model.model.layers[0].self_attn
    attn.k_proj = lora.LoRALinear(attn.k_proj, r=2, rng=0)
    attn.k_proj.lora_B.weight.data[...] = 0.3  # a non-zero update
    # (the graph adds B A x to W x, the stepper multiplies by W + B A: float32 rounding apart)
    assert_step_equals_forward(model, atol=2e-5)


@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8}])
def test_rope_rows_are_the_tables_of_the_positions(scaling):
    model = tiny(rope_theta=500.0, rope_scaling=scaling, max_position_embeddings=2048)
    plan = llama_inference._plan(model)
    for positions in (np.array([[0, 1, 2]]), np.array([[700], [5]]), np.array([[1500, 3]])):
        cos, sin = plan.rope(model, positions)  # the table grows past 256, then past 1024
        want = rope_tables(positions, 2, 500.0, scaling)
        np.testing.assert_array_equal(cos, want[0])
        np.testing.assert_array_equal(sin, want[1])
    cos, _ = plan.rope(model, np.array([[-3, 2]]))  # no row for a negative position
    np.testing.assert_array_equal(cos, rope_tables(np.array([[-3, 2]]), 2, 500.0, scaling)[0])


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_a_few_new_tokens_over_a_cache_give_the_forward_logits(kv_heads):
    """Feeding 2..7 tokens at once over a filled cache (checking drafted tokens) takes the
    few-token attention path (`ops_attention.attend_recent`: grouped rows, the last rows of
    the causal mask); every position's logits equal the graph's, in float64 to 1e-12, for
    multi-head, grouped and multi-query attention."""
    model = tiny(num_key_value_heads=kv_heads).to(np.float64)
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]])
    with no_grad():
        full = model(ids)[0].data  # (1, T, V)
    for T in range(2, 8):
        state = model.init_state(1)
        model.step(state, ids[:, :5])
        cache = state.cache
        got = transformer_step(state, ids[:, 5:5 + T], None, lambda i, p, a: (
            llama_inference.forward_logits(model, i, p, cache, None, last_only=False)))
        np.testing.assert_allclose(got[0], full[0, 5:5 + T], rtol=1e-12, atol=1e-12,
                                   err_msg=f"T = {T}")
    assert T <= RECENT_TOKENS
