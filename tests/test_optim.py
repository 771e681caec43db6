"""Tests for numpylm.optim: each update rule against numbers worked out by hand, convergence,
state saving (bitwise resume, through a real safetensors file), clipping, bad input, and
torch.optim itself when installed.

Hand-worked steps use learning rates and gradients that are powers of two wherever possible,
so SGD's expected values are exact in binary floating point and compared exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest

from numpylm.io import load_safetensors_with_metadata, save_safetensors
from numpylm.nn import Parameter
from numpylm.optim import (
    SGD,
    Adam,
    AdamW,
    clip_grad_norm_,
    grad_norm,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
)


def param(values, dtype=np.float64) -> Parameter:
    return Parameter(np.array(values, dtype=dtype))


def run(opt, p, grads):
    """Feed a sequence of gradients to one parameter, one step each."""
    for g in grads:
        p.grad = np.array(g, dtype=p.data.dtype)
        opt.step()


THETA0 = [1.0, -2.0]
G1 = [0.5, 0.25]
G2 = [1.0, -0.5]


# --------------------------------------------------------------------------- SGD by hand


def test_sgd_plain_step():
    """theta - lr*g with lr=0.5: [1 - 0.25, -2 - 0.125] = [0.75, -2.125]."""
    p = param(THETA0)
    run(SGD([p], lr=0.5), p, [G1])
    np.testing.assert_array_equal(p.data, [0.75, -2.125])


def test_sgd_weight_decay_adds_to_a_copy_of_the_gradient():
    """g + wd*theta = [0.5 + 0.5*1, 0.25 + 0.5*(-2)] = [1.0, -0.75];
    theta - 0.5*that = [0.5, -1.625]. p.grad itself must be left as it was."""
    p = param(THETA0)
    opt = SGD([p], lr=0.5, weight_decay=0.5)
    p.grad = np.array(G1)
    opt.step()
    np.testing.assert_array_equal(p.data, [0.5, -1.625])
    np.testing.assert_array_equal(p.grad, G1)


def test_sgd_momentum_first_buffer_is_the_raw_gradient():
    """mu=0.5, lr=0.5. Step 1: b1 = g1 = [0.5, 0.25]; theta1 = [0.75, -2.125].
    Step 2: b2 = 0.5*b1 + g2 = [1.25, -0.375]; theta2 = theta1 - 0.5*b2 = [0.125, -1.9375]."""
    p = param(THETA0)
    opt = SGD([p], lr=0.5, momentum=0.5)
    run(opt, p, [G1])
    np.testing.assert_array_equal(p.data, [0.75, -2.125])
    np.testing.assert_array_equal(opt.state[id(p)]["momentum_buffer"], [0.5, 0.25])
    run(opt, p, [G2])
    np.testing.assert_array_equal(opt.state[id(p)]["momentum_buffer"], [1.25, -0.375])
    np.testing.assert_array_equal(p.data, [0.125, -1.9375])


def test_sgd_dampening_skips_the_first_step():
    """mu=0.5, tau=0.5, lr=0.5. Step 1 stores g1 undampened: b1 = [0.5, 0.25], theta1 =
    [0.75, -2.125]. Step 2: b2 = 0.5*b1 + (1-0.5)*g2 = [0.25+0.5, 0.125-0.25] = [0.75, -0.125];
    theta2 = [0.75 - 0.375, -2.125 + 0.0625] = [0.375, -2.0625]."""
    p = param(THETA0)
    opt = SGD([p], lr=0.5, momentum=0.5, dampening=0.5)
    run(opt, p, [G1, G2])
    np.testing.assert_array_equal(p.data, [0.375, -2.0625])


def test_sgd_nesterov():
    """mu=0.5, lr=0.5. Step 1: b1 = g1; d = g1 + 0.5*b1 = [0.75, 0.375];
    theta1 = [1 - 0.375, -2 - 0.1875] = [0.625, -2.1875].
    Step 2: b2 = 0.5*b1 + g2 = [1.25, -0.375]; d = g2 + 0.5*b2 = [1.625, -0.6875];
    theta2 = [0.625 - 0.8125, -2.1875 + 0.34375] = [-0.1875, -1.84375]."""
    p = param(THETA0)
    opt = SGD([p], lr=0.5, momentum=0.5, nesterov=True)
    run(opt, p, [G1])
    np.testing.assert_array_equal(p.data, [0.625, -2.1875])
    run(opt, p, [G2])
    np.testing.assert_array_equal(p.data, [-0.1875, -1.84375])


# --------------------------------------------------------------------------- Adam / AdamW by hand


def test_adam_first_step_moves_each_coordinate_by_lr():
    """Step 1 with m0 = v0 = 0: m1 = (1-b1) g and v1 = (1-b2) g^2, and the bias corrections
    divide those factors back out: m^ = g, v^ = g^2. So the step is lr * g / (|g| + eps), a move
    of almost exactly lr against the sign of g: theta1 = [1 - 0.1, -2 + 0.1] up to eps."""
    p = param(THETA0)
    opt = Adam([p], lr=0.1)
    run(opt, p, [[0.5, -0.25]])
    g = np.array([0.5, -0.25])
    np.testing.assert_allclose(p.data, np.array(THETA0) - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    s = opt.state[id(p)]
    assert s["step"] == 1
    np.testing.assert_allclose(s["exp_avg"], [0.05, -0.025], rtol=1e-14)  # 0.1 * g
    np.testing.assert_allclose(s["exp_avg_sq"], [0.00025, 0.0000625], rtol=1e-14)  # 0.001 * g^2


def test_adam_second_step_bias_correction():
    """Coordinate 0 with g1 = 0.5 then g2 = 0.25, lr=0.1:
    m2 = 0.9*0.05 + 0.1*0.25 = 0.07;        m^ = 0.07 / (1 - 0.9^2)   = 0.07 / 0.19 = 0.368421...
    v2 = 0.999*0.00025 + 0.001*0.0625 = 0.00031225; v^ = v2 / (1 - 0.999^2) = v2 / 0.001999
    step = 0.1 * m^ / (sqrt(v^) + 1e-8) = 0.1 * 0.368421 / 0.395226 = 0.0932178..."""
    p = param([1.0])
    opt = Adam([p], lr=0.1)
    run(opt, p, [[0.5], [0.25]])
    first = 0.1 * 0.5 / (0.5 + 1e-8)
    m_hat = 0.07 / 0.19
    v_hat = 0.00031225 / 0.001999
    second = 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert abs(second - 0.0932178) < 1e-6
    np.testing.assert_allclose(p.data, [1.0 - first - second], rtol=1e-13)


def test_adam_l2_weight_decay_joins_the_gradient():
    """wd=0.5: g' = g + 0.5*theta = [0.5 + 0.5, -0.25 - 1.0] = [1.0, -1.25]; the first Adam step
    moves by lr against sign(g'): theta1 = [0.9, -1.9] (up to eps). p.grad is untouched."""
    p = param(THETA0)
    opt = Adam([p], lr=0.1, weight_decay=0.5)
    run(opt, p, [[0.5, -0.25]])
    g = np.array([1.0, -1.25])
    np.testing.assert_allclose(p.data, np.array(THETA0) - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    np.testing.assert_array_equal(p.grad, [0.5, -0.25])
    np.testing.assert_allclose(opt.state[id(p)]["exp_avg"], 0.1 * g, rtol=1e-14)


def test_adamw_decays_the_weights_before_the_step():
    """wd=0.5, lr=0.1: theta *= 1 - 0.1*0.5 = 0.95 -> [0.95, -1.9]; then the Adam step with the
    plain gradient [0.5, -0.25] moves by 0.1 against its sign: [0.85, -1.8] (up to eps)."""
    p = param(THETA0)
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    run(opt, p, [[0.5, -0.25]])
    g = np.array([0.5, -0.25])
    expected = np.array(THETA0) * 0.95 - 0.1 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p.data, expected, rtol=1e-14)
    np.testing.assert_allclose(opt.state[id(p)]["exp_avg"], 0.1 * g, rtol=1e-14)


@pytest.mark.parametrize(
    "amsgrad, second_step", [(False, 1 / math.sqrt(3)), (True, 1 / math.sqrt(6))]
)
def test_amsgrad_keeps_the_largest_second_moment(amsgrad, second_step):
    """betas=(0.5, 0.5), lr=1, eps=0, theta0 = 0, gradients 2 then 0.
    Step 1: m1 = 1, v1 = 2; m^ = 1/0.5 = 2, v^ = 2/0.5 = 4; step = 2/2 = 1, so theta1 = -1.
    Step 2: m2 = 0.5, v2 = 1; m^ = 0.5/(1 - 0.25) = 2/3.
      plain Adam:  v^ = 1/0.75 = 4/3,              step = (2/3)/sqrt(4/3) = 1/sqrt(3)
      amsgrad:     vmax = max(2, 1) = 2, v^ = 8/3, step = (2/3)/sqrt(8/3) = 1/sqrt(6)."""
    p = param([0.0])
    opt = Adam([p], lr=1.0, betas=(0.5, 0.5), eps=0.0, amsgrad=amsgrad)
    run(opt, p, [[2.0]])
    np.testing.assert_allclose(p.data, [-1.0], rtol=1e-15)
    run(opt, p, [[0.0]])
    np.testing.assert_allclose(p.data, [-1.0 - second_step], rtol=1e-14)
    if amsgrad:
        np.testing.assert_array_equal(opt.state[id(p)]["max_exp_avg_sq"], [2.0])


def test_defaults_match_torch():
    p = param([0.0])
    assert {k: v for k, v in Adam([p]).defaults.items()} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False
    )
    assert AdamW([p]).defaults["weight_decay"] == 1e-2
    assert SGD([p]).defaults == dict(
        lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False
    )


# --------------------------------------------------------------------------- behaviour


OPTIMIZERS = [
    ("sgd", lambda ps: SGD(ps, lr=0.1)),
    ("sgd-momentum", lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4)),
    ("sgd-nesterov", lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-dampening", lambda ps: SGD(ps, lr=0.05, momentum=0.9, dampening=0.3)),
    ("adam", lambda ps: Adam(ps, lr=0.05)),
    ("adam-l2-amsgrad", lambda ps: Adam(ps, lr=0.05, weight_decay=1e-3, amsgrad=True)),
    ("adamw", lambda ps: AdamW(ps, lr=0.05, weight_decay=1e-3)),
]


@pytest.mark.parametrize("name, make", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_converges_on_a_quadratic(name, make):
    """f(theta) = 1/2 sum a_i (theta_i - c_i)^2 has gradient a * (theta - c) and minimum at c."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 2.0, size=(4, 3))
    c = rng.standard_normal((4, 3))
    p = Parameter(np.zeros((4, 3)))
    opt = make([p])
    for _ in range(600):
        p.grad = a * (p.data - c)
        opt.step()
    # Weight decay pulls slightly towards 0, hence the loose tolerance.
    np.testing.assert_allclose(p.data, c, atol=2e-2)


@pytest.mark.parametrize("name, make", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_updates_in_place_keep_dtype_and_skip_missing_grads(name, make):
    a = Parameter(np.ones((2, 3), dtype=np.float32))
    b = Parameter(np.ones(4, dtype=np.float32))
    opt = make([a, b])
    array = a.data
    a.grad = np.full((2, 3), 0.5, dtype=np.float32)
    before = a.grad.copy()
    opt.step()
    assert a.data is array and a.data.dtype == np.float32
    assert not np.array_equal(a.data, np.ones((2, 3)))
    np.testing.assert_array_equal(a.grad, before)
    np.testing.assert_array_equal(b.data, np.ones(4))  # b.grad is None: untouched
    assert id(b) not in opt.state
    for value in opt.state.get(id(a), {}).values():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("name, make", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_block_size_and_memory_layout_do_not_change_the_result(monkeypatch, name, make):
    """The rule runs on cache-sized blocks; being elementwise, any block size (here 3 elements
    of 8 bytes versus the whole array) and a non-contiguous parameter must give the same bits."""
    import numpylm.optim.optimizer as optimizer_module

    rng = np.random.default_rng(5)
    start = rng.standard_normal((6, 7))
    grads = [rng.standard_normal((6, 7)) for _ in range(4)]
    results = []
    for block_bytes, layout in [(1 << 20, "C"), (24, "C"), (24, "F")]:
        monkeypatch.setattr(optimizer_module, "_BLOCK_BYTES", block_bytes)
        p = Parameter(np.array(start, order=layout))
        opt = make([p])
        for g in grads:
            p.grad = np.asfortranarray(g) if layout == "F" else g.copy()
            opt.step()
        results.append(p.data.copy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_works_on_any_object_with_data_and_grad():
    class Stand:
        def __init__(self, data):
            self.data, self.grad = data, None

    s = Stand(np.array([1.0, -2.0]))
    run(SGD([s], lr=0.5), s, [G1])
    np.testing.assert_array_equal(s.data, [0.75, -2.125])


def test_param_groups_override_defaults_and_lr_is_mutable():
    """Group 0 takes the default lr 0.5; group 1 sets lr 0.25. Gradient 1 everywhere:
    a = 1 - 0.5 = 0.5, b = 1 - 0.25 = 0.75. Then group 0's lr is set to 0.125: a = 0.375."""
    a, b = param([1.0]), param([1.0])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.25, "name": "biases"}], lr=0.5)
    a.grad, b.grad = np.ones(1), np.ones(1)
    opt.step()
    np.testing.assert_array_equal([a.data[0], b.data[0]], [0.5, 0.75])
    opt.param_groups[0]["lr"] = 0.125
    opt.step()
    np.testing.assert_array_equal([a.data[0], b.data[0]], [0.375, 0.5])
    assert opt.param_groups[1]["name"] == "biases"


def test_bad_arguments_are_refused():
    p = param([1.0])
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="not a single Parameter"):
        SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="invalid lr"):
        SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="invalid eps"):
        Adam([p], eps=float("nan"))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['weight_deacy'\]"):
        AdamW([{"params": [p], "weight_deacy": 0.0}])
    with pytest.raises(ValueError, match="more than one place"):
        Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="param 0 of a group is a list"):
        Adam([[1.0, 2.0]])
    with pytest.raises(TypeError, match="int64"):
        Adam([_IntParam()])
    opt = Adam([p])
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"\(3,\) does not match .* \(1,\)"):
        opt.step()


class _IntParam:
    data = np.arange(3)
    grad = None


# --------------------------------------------------------------------------- saving and resuming


def _two_groups(make, rng):
    ps = [Parameter(rng.standard_normal(s)) for s in [(3, 4), (4,), (2, 2)]]
    return ps, make([{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0}])


def _steps(opt, ps, grads):
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.copy()
        opt.step()


@pytest.mark.parametrize("name, make", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
@pytest.mark.parametrize("through_file", [False, True], ids=["in-memory", "safetensors"])
def test_resume_from_state_dict_is_bitwise_identical(tmp_path, name, make, through_file):
    """3 steps, save, build a fresh optimiser over copies of the parameters, load, 4 more
    steps: the result equals 7 uninterrupted steps exactly."""
    rng = np.random.default_rng(2)
    ps, opt = _two_groups(make, rng)
    grads = [[rng.standard_normal(p.data.shape) for p in ps] for _ in range(7)]
    _steps(opt, ps, grads[:3])

    sd = opt.state_dict()
    if through_file:
        tensors, metadata = optimizer_state_to_tensors(sd)
        save_safetensors(tensors, tmp_path / "optimizer.safetensors", metadata)
        loaded = load_safetensors_with_metadata(tmp_path / "optimizer.safetensors")
        sd = optimizer_state_from_tensors(*loaded)
    qs = [Parameter(p.data.copy()) for p in ps]
    fresh = make([{"params": qs[:2]}, {"params": qs[2:]}])  # group 1's weight decay comes from sd
    fresh.load_state_dict(sd)
    restored = [g["weight_decay"] for g in fresh.param_groups]
    assert restored == [g["weight_decay"] for g in opt.param_groups]

    _steps(opt, ps, grads[3:])
    _steps(fresh, qs, grads[3:])
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_layout_and_flat_round_trip():
    p, q = param([1.0, 2.0]), param([3.0])
    opt = Adam([{"params": [p]}, {"params": [q], "lr": 0.5}], amsgrad=True)
    p.grad = np.array([0.5, 0.5])
    opt.step()  # q has no gradient, so no state
    sd = opt.state_dict()
    assert list(sd["state"]) == [0]
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][1]["params"] == [1]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["betas"] == (0.9, 0.999)

    tensors, metadata = optimizer_state_to_tensors(sd)
    assert set(tensors) == {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.max_exp_avg_sq"}
    assert all(isinstance(v, str) for v in metadata.values())
    back = optimizer_state_from_tensors(tensors, metadata)
    assert back["param_groups"] == sd["param_groups"]
    assert back["state"][0]["step"] == 1
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_array_equal(back["state"][0][key], sd["state"][0][key])
    # state_dict() returns copies: stepping on does not change a saved snapshot.
    saved = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)


def test_load_state_dict_refuses_what_does_not_fit():
    p, q = param([1.0, 2.0]), param([3.0])
    opt = SGD([p, q], lr=0.1, momentum=0.9)
    p.grad, q.grad = np.ones(2), np.ones(1)
    opt.step()
    sd = opt.state_dict()

    with pytest.raises(ValueError, match="group 0 has 2 params in the state dict but 1"):
        SGD([p], lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="2 param groups, this optimizer has 1"):
        SGD([p, q], lr=0.1, momentum=0.9).load_state_dict(
            {"state": {}, "param_groups": sd["param_groups"] * 2}
        )
    swapped = SGD([q, p], lr=0.1, momentum=0.9)
    message = r"param 0: 'momentum_buffer' has shape \(2,\) but the param has shape \(1,\)"
    with pytest.raises(ValueError, match=message):
        swapped.load_state_dict(sd)
    assert swapped.state == {}  # nothing changed by a failed load
    with pytest.raises(ValueError, match="keys \\['momentum_buffer'\\], expected \\['exp_avg'"):
        Adam([p, q]).load_state_dict({"state": sd["state"], "param_groups": [{"params": [0, 1]}]})
    with pytest.raises(ValueError, match="not an optimizer state written by numpylm"):
        optimizer_state_from_tensors({}, {"format": "something else"})
    tensors, metadata = optimizer_state_to_tensors(sd)
    with pytest.raises(ValueError, match="unexpected tensor 'weights'"):
        optimizer_state_from_tensors({**tensors, "weights": np.zeros(1)}, metadata)


def test_loaded_state_takes_the_parameter_dtype():
    p = Parameter(np.ones(2, dtype=np.float32))
    opt = Adam([p])
    opt.load_state_dict(
        {
            "state": {0: {"step": 2, "exp_avg": np.ones(2), "exp_avg_sq": np.ones(2)}},
            "param_groups": [{"params": [0], "lr": 0.01, "betas": [0.8, 0.9]}],
        }
    )
    assert opt.state[id(p)]["exp_avg"].dtype == np.float32
    assert opt.param_groups[0]["betas"] == (0.8, 0.9) and opt.param_groups[0]["eps"] == 1e-8


# --------------------------------------------------------------------------- clipping


def test_clip_grad_norm_by_hand():
    """Gradients [3, 4] and [12]: norm = sqrt(9 + 16 + 144) = 13. With max_norm 6.5 every
    gradient is multiplied by 6.5 / (13 + 1e-6), i.e. very nearly halved; a parameter without a
    gradient is ignored. The norm before clipping is returned."""
    a, b, c = param([0.0, 0.0]), param([0.0]), param([0.0])
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])
    assert grad_norm([a, b, c]) == 13.0
    norm = clip_grad_norm_([a, b, c], 6.5)
    assert norm == 13.0
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3.0 * coef, 4.0 * coef], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [12.0 * coef], rtol=1e-15)
    assert c.grad is None
    assert math.isclose(grad_norm([a, b]), 6.5, rel_tol=1e-6)


def test_clip_grad_norm_leaves_small_gradients_alone():
    a = param([0.0, 0.0], dtype=np.float32)
    a.grad = np.array([3.0, 4.0], dtype=np.float32)
    assert clip_grad_norm_([a], 20.0) == 5.0
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    assert a.grad.dtype == np.float32


def test_clip_grad_norm_nonfinite():
    a = param([0.0, 0.0])
    a.grad = np.array([np.inf, 1.0])
    with pytest.raises(ValueError, match="inf"):
        clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    assert math.isinf(clip_grad_norm_([a], 1.0))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([a], -1.0)


# --------------------------------------------------------------------------- torch itself


TORCH_CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "name, options", TORCH_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CONFIGS)]
)
def test_matches_torch_optim(name, options, dtype):
    torch = pytest.importorskip("torch")
    ours = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name]
    theirs = getattr(torch.optim, name)
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (3,), ()]
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    ts = [torch.tensor(p.data.copy(), requires_grad=True) for p in ps]
    opt, topt = ours(ps, **options), theirs(ts, **options)
    for _ in range(8):
        for p, t in zip(ps, ts):
            g = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad, t.grad = g, torch.tensor(g.copy())
        opt.step()
        topt.step()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for p, t in zip(ps, ts):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=tol, atol=tol)


def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ps = [Parameter(np.zeros(s, np.float32)) for s in [(4, 5), (7,)]]
    ts = [torch.zeros(s, requires_grad=True) for s in [(4, 5), (7,)]]
    for p, t in zip(ps, ts):
        g = rng.standard_normal(p.data.shape).astype(np.float32)
        p.grad, t.grad = g, torch.tensor(g.copy())
    norm = clip_grad_norm_(ps, 1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert math.isclose(norm, float(tnorm), rel_tol=1e-6)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)
