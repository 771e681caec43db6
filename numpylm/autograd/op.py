"""How an op is defined: forward and backward side by side, on plain numpy arrays.

An op is a function that takes numpy arrays and returns `(output, backward)`, where
`backward(g)` maps the gradient of the loss with respect to the output to one gradient per
positional argument. The `@op` decorator does the bookkeeping, so each rule stays pure math:

- it unwraps `Tensor` arguments to arrays (lists of tensors, for `concatenate` and `stack`,
  become lists of arrays) and leaves every other argument (Python scalars, index arrays,
  keyword options) as it is;
- it wraps the output in a `Tensor` and, if any input requires grad and recording is on,
  remembers the op's inputs and backward function;
- in the backward pass, it reduces each gradient to its input's shape with `unbroadcast`
  (the one place broadcasting is undone), casts it to the input's dtype and checks its shape.

A rule may return a zero-argument function instead of an array for a gradient that is
expensive; it is then only called when that input needs a gradient (the weight gradient of
a matmul whose other side is data, for example). Every op is added to `REGISTRY`, which the
tests enumerate: an op without a finite-difference test fails the suite.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np

from numpylm.autograd.tensor import Node, Tensor, is_grad_enabled

# name -> the public (Tensor-level) function of every differentiable op.
REGISTRY: dict[str, Callable[..., Tensor]] = {}


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting.

    Broadcasting copies an input along new leading axes and along its size-1 axes, so
    the gradient with respect to the input is the sum over exactly those axes.
    """
    grad = np.asarray(grad)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _unwrap(arg):
    if isinstance(arg, Tensor):
        return arg.data
    if isinstance(arg, (list, tuple)) and any(isinstance(a, Tensor) for a in arg):
        return [a.data if isinstance(a, Tensor) else a for a in arg]
    return arg


def _needs_grad(arg) -> bool:
    if isinstance(arg, Tensor):
        return arg.requires_grad
    if isinstance(arg, (list, tuple)):
        return any(isinstance(a, Tensor) and a.requires_grad for a in arg)
    return False


def op(rule: Callable | None = None, *, name: str | None = None):
    """Register `rule` as a differentiable op and return its Tensor-level function."""
    if rule is None:
        return functools.partial(op, name=name)
    op_name = name or rule.__name__

    @functools.wraps(rule)
    def apply(*args, **kwargs):
        out, backward = rule(*[_unwrap(a) for a in args], **kwargs)
        result = Tensor(out)
        if is_grad_enabled() and any(_needs_grad(a) for a in args):
            result.requires_grad = True
            result._node = Node(op_name, args, backward)
        return result

    apply.rule = rule
    apply.op_name = op_name
    if op_name in REGISTRY:
        raise ValueError(f"op {op_name!r} is registered twice")
    REGISTRY[op_name] = apply
    return apply


def _reduce_to(x: Tensor, grad, op_name: str) -> np.ndarray:
    if callable(grad):
        grad = grad()
    grad = unbroadcast(grad, x.shape)
    if grad.shape != x.shape:
        raise RuntimeError(f"op {op_name!r} returned a gradient of shape {grad.shape} "
                           f"for an input of shape {x.shape}")
    if grad.dtype != x.dtype:
        grad = grad.astype(x.dtype)
    return grad


def distribute(node: Node, grad: np.ndarray) -> Iterator[tuple[Tensor, np.ndarray]]:
    """Run a node's backward rule; yield (input tensor, its gradient) for inputs that need one.

    A rule returns one gradient per positional input; it may stop early, or return None,
    for trailing inputs that are not tensors (options such as an exponent or a mask).
    """
    grads = node.backward(grad)
    for i, arg in enumerate(node.inputs):
        g = grads[i] if i < len(grads) else None
        if isinstance(arg, Tensor):
            if arg.requires_grad:
                if g is None:
                    raise RuntimeError(f"op {node.op!r} returned no gradient for input {i}")
                yield arg, _reduce_to(arg, g, node.op)
        elif isinstance(arg, (list, tuple)) and g is not None:
            for a, ga in zip(arg, g):
                if isinstance(a, Tensor) and a.requires_grad and ga is not None:
                    yield a, _reduce_to(a, ga, node.op)
