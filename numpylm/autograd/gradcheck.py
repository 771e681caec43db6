"""Proving a gradient: compare what backward() computes with central finite differences.

For a scalar function f and an input x, the central difference
    (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)
approximates df/dx_i with error O(eps^2), so in float64 with eps = 1e-6 it agrees with a
correct analytic gradient to about 1e-8 relative. A function with a non-scalar output is
reduced to a scalar by a fixed random projection sum(f(x) * R), which checks every output.
Inputs with many elements are checked along random directions v: the analytic
directional derivative grad . v against (f(x + eps v) - f(x - eps v)) / (2 eps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from numpylm.autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


@dataclass
class GradcheckResult:
    max_abs_error: float
    max_rel_error: float
    checked: int  # number of scalar comparisons made
    passed: bool
    message: str = ""


def _prepare(inputs: Sequence[Any]) -> tuple[list[Any], list[Tensor], list[str]]:
    """float64 copies of the inputs; return (arguments for fn, tensors to check, names)."""
    args, checked, names = [], [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            data = x.data.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x.data
            t = Tensor(np.array(data, copy=True), requires_grad=x.requires_grad)
            args.append(t)
            if x.requires_grad:
                checked.append(t)
                names.append(f"input {i}")
        elif isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            t = Tensor(x.astype(np.float64), requires_grad=True)
            args.append(t)
            checked.append(t)
            names.append(f"input {i}")
        else:
            args.append(x)  # integer arrays, scalars and options are held fixed
    return args, checked, names


def gradcheck(fn: Callable[..., Tensor], *inputs: Any, params: Iterable[Tensor] | None = None,
              eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              max_elements: int = 64, n_directions: int = 6, seed: int = 0,
              raise_exception: bool = True) -> GradcheckResult:
    """Check `fn`'s analytic gradients against central differences, in float64.

    Checked are: floating numpy arrays and Tensors with `requires_grad=True` among `inputs`
    (copied to float64), and `params` (tensors used inside `fn`, checked in place; make the
    model float64 first). Integer arrays, Tensors without `requires_grad` and other values
    are passed through unchanged. An input with at most `max_elements` elements is checked
    element by element; a larger one along `n_directions` random directions plus a random
    sample of `max_elements` elements. An entry passes if |analytic - numeric| <= atol +
    rtol * |numeric|. On failure, raises `GradcheckError` naming the input, the element
    index, the analytic and the numeric value (or returns the result, if
    `raise_exception=False`).
    """
    args, checked, names = _prepare(inputs)
    for j, p in enumerate(params or ()):
        if p.dtype != np.float64:
            raise TypeError(f"gradcheck: parameter {j} has dtype {p.dtype}; "
                            f"convert the model to float64 first")
        checked.append(p)
        names.append(getattr(p, "name", None) or f"parameter {j}")
    if not checked:
        raise ValueError("gradcheck: nothing to check (no floating input or parameter)")

    rng = np.random.default_rng(seed)
    probe = fn(*args)
    if not isinstance(probe, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(probe).__name__}")
    # Reduce a non-scalar output to a scalar with a fixed random projection.
    projection = None if probe.size == 1 else rng.standard_normal(probe.shape)

    def scalar() -> float:
        out = fn(*args).data
        return float(out.sum() if projection is None else (out * projection).sum())

    def central(flat: np.ndarray, where, delta) -> float:
        """(f(x + delta) - f(x - delta)) / (2 eps), moving flat[where] in place and back."""
        saved = flat[where].copy()
        flat[where] = saved + delta
        up = scalar()
        flat[where] = saved - delta
        down = scalar()
        flat[where] = saved
        return (up - down) / (2 * eps)

    for t in checked:
        t.grad = None
    out = fn(*args)
    out.backward(None if projection is None else projection.reshape(out.shape))
    analytic = [np.zeros_like(t.data) if t.grad is None else t.grad.copy() for t in checked]

    worst = GradcheckResult(0.0, 0.0, 0, True)
    for name, t, grad in zip(names, checked, analytic):
        flat = t.data.reshape(-1)  # a view: writing to it perturbs the input in place
        if t.size <= max_elements:
            indices = range(t.size)
        else:
            indices = rng.choice(t.size, size=max_elements, replace=False)
            for _ in range(n_directions):
                v = rng.standard_normal(t.size)
                v /= np.linalg.norm(v)
                numeric = central(flat, slice(None), eps * v)
                exact = float(grad.reshape(-1) @ v)
                if not _record(worst, exact, numeric, atol, rtol):
                    worst.message = (f"gradcheck failed for {name} (shape {t.shape}) along a "
                                     f"random direction: analytic {exact:.8g}, "
                                     f"numeric {numeric:.8g}")
                    return _finish(worst, raise_exception)
        for i in indices:
            numeric = central(flat, i, eps)
            exact = float(grad.reshape(-1)[i])
            if not _record(worst, exact, numeric, atol, rtol):
                index = np.unravel_index(i, t.shape)
                worst.message = (f"gradcheck failed for {name} (shape {t.shape}) at index "
                                 f"{tuple(int(k) for k in index)}: analytic {exact:.8g}, "
                                 f"numeric {numeric:.8g}")
                return _finish(worst, raise_exception)
    return worst


def _record(result: GradcheckResult, exact: float, numeric: float,
            atol: float, rtol: float) -> bool:
    err = abs(exact - numeric)
    result.checked += 1
    result.max_abs_error = max(result.max_abs_error, err)
    result.max_rel_error = max(result.max_rel_error,
                               err / max(abs(numeric), abs(exact), 1e-8))
    ok = bool(err <= atol + rtol * abs(numeric))  # NaN fails too
    result.passed = result.passed and ok
    return ok


def _finish(result: GradcheckResult, raise_exception: bool) -> GradcheckResult:
    if raise_exception:
        raise GradcheckError(result.message)
    return result
