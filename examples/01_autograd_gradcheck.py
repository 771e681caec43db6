"""01 - Autograd and gradcheck: how a Tensor computes gradients, and how to prove them.

    python examples/01_autograd_gradcheck.py [--dot graph.dot]

Runs in about a second. What to notice in the output:
1. the gradient of a small expression, next to its finite-difference estimate (they agree
   to about 1e-9);
2. a new op defined with forward and backward side by side, checked by `gradcheck`;
3. the same op with a deliberate mistake in its backward rule: `gradcheck` names the input,
   the element, the analytic and the numeric value;
4. gradients accumulate across backward() calls until zero_grad();
5. (with --dot FILE) the expression's graph as Graphviz DOT text.
"""
from __future__ import annotations

import argparse

import numpy as np

import numpylm.functional as F
from numpylm import Tensor, gradcheck
from numpylm.autograd import REGISTRY, GradcheckError, op, to_dot


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Autograd and finite-difference gradient checks.")
    ap.add_argument("--dot", metavar="FILE", help="write the expression's graph as DOT text")
    args = ap.parse_args(argv)

    print("1. y = sum(tanh(x * w) ** 2)")
    x = Tensor([1.0, -2.0, 3.0], requires_grad=True, name="x")
    w = Tensor([0.5, 0.25, -1.0], requires_grad=True, name="w")
    y = (F.tanh(x * w) ** 2).sum()
    if args.dot:
        with open(args.dot, "w", encoding="utf-8") as f:
            f.write(to_dot(y))
        print(f"   graph written to {args.dot}")
    y.backward()
    eps = 1e-6
    numeric = []
    for i in range(3):
        up, down = x.data.copy(), x.data.copy()
        up[i] += eps
        down[i] -= eps
        f_up = (np.tanh(up * w.data) ** 2).sum()
        f_down = (np.tanh(down * w.data) ** 2).sum()
        numeric.append((f_up - f_down) / (2 * eps))
    print(f"   backward():          dy/dx = {np.round(x.grad, 8)}")
    print(f"   finite differences:  dy/dx = {np.round(numeric, 8)}")
    print(f"   largest difference:  {np.max(np.abs(x.grad - numeric)):.1e}")

    print("2. a new op, softplus(x) = log(1 + e^x), with its derivative next to it")

    @op(name="example_softplus")
    def softplus(a):
        y = np.logaddexp(0.0, a)
        def backward(g):  # d/dx log(1 + e^x) = e^x / (1 + e^x) = sigmoid(x)
            return (g / (1.0 + np.exp(-a)),)
        return y, backward

    @op(name="example_softplus_wrong")
    def softplus_wrong(a):
        y = np.logaddexp(0.0, a)
        def backward(g):  # a typical slip: the sign inside the exponent
            return (g / (1.0 + np.exp(a)),)
        return y, backward

    try:
        inputs = np.random.default_rng(0).standard_normal((2, 3))
        result = gradcheck(softplus, inputs)
        print(f"   gradcheck passed: {result.checked} entries, "
              f"max abs error {result.max_abs_error:.1e}")
        print("3. the same op with a wrong backward rule")
        try:
            gradcheck(softplus_wrong, inputs)
        except GradcheckError as err:
            print(f"   gradcheck caught it: {err}")
    finally:  # keep the registry to the library's own ops
        REGISTRY.pop("example_softplus", None)
        REGISTRY.pop("example_softplus_wrong", None)

    print("4. gradients accumulate")
    a = Tensor(3.0, requires_grad=True)
    (a * a).backward()
    first = a.grad.item()
    (a * a).backward()
    print(f"   after one backward: {first}, after two: {a.grad.item()} (call zero_grad() between steps)")


if __name__ == "__main__":
    main()
