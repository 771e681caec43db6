"""The engine under everything: a `Tensor` that remembers how it was made, so that
`backward()` can apply the chain rule from the output back to every input.

A tensor made by an op holds a `Node`: the op's name, its input tensors and the op's
backward function. `backward()` orders the graph topologically with an explicit stack (an
unrolled RNN makes graphs tens of thousands of nodes deep, far past Python's recursion
limit) and walks it once from the output to the leaves, adding up gradients on the way.

Gradient conventions, chosen to match what most readers know from PyTorch:
- Gradients *accumulate*: calling `backward()` twice adds the second gradient to `.grad`.
  Call `zero_grad()` (or an optimiser's) between steps.
- Only leaves (tensors made by the user, such as parameters) keep `.grad`; intermediate
  gradients are dropped as soon as they have been passed on, to save memory.
- The graph is freed after `backward()` unless `retain_graph=True`; walking a freed graph
  again raises instead of silently giving wrong gradients.

Dtypes follow numpy's promotion rules (NEP 50): float32 with float32 stays float32, a Python
scalar never changes the dtype, float32 mixed with float64 gives float64. Each gradient is
cast back to the dtype of the tensor it belongs to.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether ops currently record the graph (see `no_grad`)."""
    return getattr(_state, "grad_enabled", True)


class no_grad(contextlib.ContextDecorator):
    """Turn graph recording off, for inference and for optimiser updates.

    Use as `with no_grad(): ...` or as a decorator `@no_grad()`.
    """

    def __enter__(self) -> "no_grad":
        self._previous = is_grad_enabled()
        _state.grad_enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled = self._previous


class Node:
    """How a tensor was made: the op's name, its inputs, and the op's backward function."""

    __slots__ = ("op", "inputs", "backward")

    def __init__(self, op: str, inputs: tuple, backward: Callable) -> None:
        self.op = op
        self.inputs = inputs  # the op's positional arguments (tensors or plain values)
        self.backward = backward


# Marks a node whose graph has been freed by an earlier backward().
_FREED = Node("<freed>", (), None)


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    return np.asarray(data, dtype=dtype)


class Tensor:
    """An n-dimensional array that can carry a gradient.

    `data` is a plain `np.ndarray`; `grad` is None until a backward pass reaches this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "name", "__weakref__")
    # Make `ndarray + Tensor` call Tensor.__radd__ instead of numpy broadcasting over objects.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None) -> None:
        self.data = _as_array(data, dtype)
        self.grad: np.ndarray | None = None
        self.requires_grad = False
        self._node: Node | None = None
        self.name = name
        if requires_grad:
            self.requires_grad_(True)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    # ---- array-like properties -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="Tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._node is not None and self._node is not _FREED:
            extra = f", op={self._node.op}"
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def __hash__(self) -> int:  # identity hashing: tensors are graph nodes, not values
        return id(self)

    # ---- backward ---------------------------------------------------------------------
    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Add d(self)/d(leaf), times `grad`, to `.grad` of every leaf that requires it.

        `grad` may be omitted only for a tensor with one element (a loss), where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient argument needs a tensor with one element; "
                    f"this one has shape {self.shape}: pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = _as_array(grad, self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape}, "
                                 f"tensor has shape {self.shape}")
        _run_backward(self, grad, retain_graph)

    # ---- operators (the ops themselves live in numpylm.autograd.ops_*) -------------------
    def __add__(self, other): return _ops().add(self, other)
    def __radd__(self, other): return _ops().add(other, self)
    def __sub__(self, other): return _ops().sub(self, other)
    def __rsub__(self, other): return _ops().sub(other, self)
    def __mul__(self, other): return _ops().mul(self, other)
    def __rmul__(self, other): return _ops().mul(other, self)
    def __truediv__(self, other): return _ops().div(self, other)
    def __rtruediv__(self, other): return _ops().div(other, self)
    def __neg__(self): return _ops().neg(self)
    def __pow__(self, exponent): return _ops().pow(self, exponent)
    def __matmul__(self, other): return _ops().matmul(self, other)
    def __rmatmul__(self, other): return _ops().matmul(other, self)
    def __getitem__(self, index): return _ops().getitem(self, index)

    # Comparisons give plain boolean arrays: they have no gradient.
    def __lt__(self, other): return self.data < _as_array(other)
    def __le__(self, other): return self.data <= _as_array(other)
    def __gt__(self, other): return self.data > _as_array(other)
    def __ge__(self, other): return self.data >= _as_array(other)

    # ---- methods that mirror numpy ----------------------------------------------------
    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis=axis, keepdims=keepdims)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def sqrt(self): return _ops().sqrt(self)
    def tanh(self): return _ops().tanh(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def relu(self): return _ops().relu(self)
    def gelu(self): return _ops().gelu(self)
    def softmax(self, axis=-1): return _ops().softmax(self, axis=axis)
    def log_softmax(self, axis=-1): return _ops().log_softmax(self, axis=axis)
    def logsumexp(self, axis=-1, keepdims=False):
        return _ops().logsumexp(self, axis=axis, keepdims=keepdims)
    def astype(self, dtype): return _ops().astype(self, dtype=np.dtype(dtype))
    def masked_fill(self, mask, value): return _ops().masked_fill(self, mask, value)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape=shape)

    def transpose(self, *axes):
        """Permute axes as `np.transpose`; with two axes, swap just those two."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2 and self.ndim != 2:
            return self.swapaxes(*axes)
        return _ops().transpose(self, axes=axes or None)

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops().transpose(self, axes=axes)

    def swapaxes(self, a: int, b: int):
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return _ops().transpose(self, axes=tuple(perm))

    @property
    def T(self):
        return _ops().transpose(self, axes=None)

    def split(self, indices_or_sections, axis=0):
        return _ops().split(self, indices_or_sections, axis=axis)


@functools.lru_cache(maxsize=None)
def _ops():
    """The ops behind Tensor's operators and methods, by name. Imported late: the op
    modules import Tensor from here."""
    import types

    from numpylm.autograd import ops_math, ops_nn, ops_reduce, ops_shape
    names = {}
    for module in (ops_math, ops_nn, ops_reduce, ops_shape):
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return types.SimpleNamespace(**names)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors that require grad and lead to `root`, each after all of its inputs.

    An explicit stack instead of recursion: graphs from unrolled sequences are very deep.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        node = tensor._node
        if node is _FREED:
            raise RuntimeError(
                "backward() through a graph that an earlier backward() already freed; "
                "pass retain_graph=True to the first call to walk it twice")
        if node is not None:
            for x in _tensor_inputs(node):
                if x.requires_grad and id(x) not in visited:
                    stack.append((x, False))
    return order


def _tensor_inputs(node: Node) -> Iterator[Tensor]:
    for arg in node.inputs:
        if isinstance(arg, Tensor):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield from (a for a in arg if isinstance(a, Tensor))


def _run_backward(root: Tensor, grad: np.ndarray, retain_graph: bool) -> None:
    from numpylm.autograd.op import distribute  # the one place broadcasting is undone

    grads: dict[int, np.ndarray] = {id(root): grad}
    for tensor in reversed(_topological_order(root)):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue  # no path from root carries a gradient here
        node = tensor._node
        if node is None:  # a leaf: keep the gradient, adding to what is there
            if tensor.grad is None:
                tensor.grad = np.array(g, dtype=tensor.dtype, copy=True)
            else:
                tensor.grad += g
            continue
        for x, gx in distribute(node, g):
            previous = grads.get(id(x))
            grads[id(x)] = gx if previous is None else previous + gx
        if not retain_graph:
            tensor._node = _FREED
