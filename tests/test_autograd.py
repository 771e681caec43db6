"""The Tensor's contract: accumulation, graph freeing, deep graphs, no_grad, dtypes, errors."""
import numpy as np
import pytest

import numpylm.functional as F
from numpylm import Tensor, gradcheck, no_grad
from numpylm.autograd import GradcheckError, op


def test_micrograd_style_expression():
    """f = a*b + b**3 at a=2, b=-3: df/da = b = -3, df/db = a + 3b^2 = 2 + 27 = 29."""
    a = Tensor(2.0, requires_grad=True)
    b = Tensor(-3.0, requires_grad=True)
    f = a * b + b ** 3
    f.backward()
    assert f.item() == -33.0
    assert a.grad == -3.0 and b.grad == 29.0


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    (x * 3.0).sum().backward()  # adds 3 to each
    np.testing.assert_array_equal(x.grad, [5.0, 7.0])
    x.zero_grad()
    assert x.grad is None


def test_a_reused_input_gets_the_sum_of_its_paths():
    x = Tensor(3.0, requires_grad=True)
    y = x * x + x  # dy/dx = 2x + 1 = 7
    y.backward()
    assert x.grad == 7.0


def test_graph_is_freed_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.tanh() * 2.0).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()  # the retained graph can be walked again: the gradient doubles
    np.testing.assert_allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="freed"):
        y.backward()


def test_a_chain_of_ten_thousand_ops_does_not_recurse():
    x = Tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 10_000)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    z = x * 2.0
    assert z.requires_grad


def test_detach_cuts_the_graph():
    x = Tensor(2.0, requires_grad=True)
    y = x * x.detach()  # only the first factor is differentiated: dy/dx = x = 2
    y.backward()
    assert x.grad == 2.0


def test_reflected_operators_and_numpy_on_the_left():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (1.0 - x) + 2.0 * x + np.array([1.0, 1.0]) / x + np.ones((2, 2)) @ x
    y.sum().backward()
    # d/dx_i: -1 + 2 - 1/x_i^2 + 2 (each x_i appears in both rows of the matmul)
    np.testing.assert_allclose(x.grad, [-1 + 2 - 1.0 + 2, -1 + 2 - 0.25 + 2])


def test_dtype_rules():
    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (x32 * 2.5).dtype == np.float32      # a Python scalar never promotes
    assert (x32 + x32).dtype == np.float32
    x64 = Tensor(np.ones(3), requires_grad=True)
    y = x32 * x64                              # numpy's promotion: float64
    assert y.dtype == np.float64
    y.sum().backward()
    assert x32.grad.dtype == np.float32 and x64.grad.dtype == np.float64


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    y.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int"):
        Tensor(np.arange(3), requires_grad=True)


def test_backward_without_any_grad_input_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor(1.0) * 2.0).backward()


@pytest.mark.parametrize("fn, shapes", [
    (F.add, [(2, 3), (4,)]),
    (F.mul, [(2, 3), (2,)]),
    (F.matmul, [(2, 3), (4, 5)]),
    (F.matmul, [(2, 3, 4), (5, 4, 2)]),
])
def test_shape_mismatch_names_the_op_and_both_shapes(fn, shapes):
    a, b = (Tensor(np.ones(s)) for s in shapes)
    with pytest.raises(ValueError) as err:
        fn(a, b)
    message = str(err.value)
    assert fn.op_name in message and str(shapes[0]) in message and str(shapes[1]) in message


def test_cross_entropy_target_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4,\).*\(5,\)"):
        F.cross_entropy(Tensor(np.zeros((4, 5))), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="target 7"):
        F.cross_entropy(Tensor(np.zeros((2, 5))), np.array([1, 7]))


def test_split_is_differentiable():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    a, b = x.split([1], axis=1)
    (a.sum() * 2.0 + b.sum()).backward()
    np.testing.assert_array_equal(x.grad, [[2, 1, 1], [2, 1, 1]])


def test_gradcheck_catches_a_wrong_rule_and_names_the_element():
    @op(name="_test_wrong_square")
    def wrong_square(x):
        def backward(g):  # wrong on purpose: d/dx x^2 = 2x, not x
            return (g * x,)
        return x * x, backward
    try:
        with pytest.raises(GradcheckError, match=r"input 0 .* index \(0, 0\): analytic"):
            gradcheck(wrong_square, np.array([[1.0, 2.0]]))
        result = gradcheck(wrong_square, np.array([[1.0, 2.0]]), raise_exception=False)
        assert not result.passed
        gradcheck(lambda x: x * x, np.array([[1.0, 2.0]]))  # the correct composition passes
    finally:
        from numpylm.autograd import REGISTRY
        REGISTRY.pop("_test_wrong_square")


def test_gradcheck_along_random_directions_for_large_inputs():
    x = np.random.default_rng(0).standard_normal((20, 30))
    result = gradcheck(F.tanh, x, max_elements=16, n_directions=4)
    assert result.passed and result.checked == 20
