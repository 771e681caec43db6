"""What every optimiser shares: parameter groups, per-parameter state, and saving both.

Part of the engine under everything. An optimiser turns gradients into parameter updates.
The update rule differs between SGD and Adam, but the bookkeeping does not, and it follows
`torch.optim` so that a reader who knows one knows the other:

- `param_groups` is a list of dicts, each holding `"params"` and its own hyperparameters
  (`"lr"`, `"weight_decay"`, ...). A schedule changes the learning rate by assigning
  `group["lr"]`; a model can exempt biases from weight decay by putting them in a group with
  `"weight_decay": 0.0`.
- `state` holds what the rule remembers between steps (momentum buffers, moment estimates),
  one dict per parameter, keyed by `id(param)`.
- `state_dict()` replaces each parameter by its position (0, 1, 2, ... across the groups in
  order), so the saved state does not depend on object identity and loads into a fresh
  optimiser built over the same parameters in the same order.

A parameter is anything with `.data`, a floating-point `np.ndarray`, and `.grad`, an array of
the same shape or None. Updates write into `.data` **in place**: a model's layers hold the very
same arrays, so there is nothing to copy back. Parameters whose `.grad` is None are skipped,
as in torch. `.grad` itself is never modified by `step()`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["Optimizer"]

# Bytes per array in one block of `_blockwise`: small enough that a parameter's block, its
# gradient, state and scratch fit in a core's cache together; large enough that the cost of a
# NumPy call per pass is small next to the arithmetic.
_BLOCK_BYTES = 1 << 20

# Group keys every optimiser accepts besides its own hyperparameters: a label for humans.
_FREE_KEYS = frozenset({"name"})


def _is_param(obj: object) -> bool:
    return hasattr(obj, "grad") and isinstance(getattr(obj, "data", None), np.ndarray)


class Optimizer:
    """Base class: groups, state and (de)serialisation. Subclasses define the update rule.

    A subclass sets `defaults` (via `__init__`) and implements:
    - `_validate_group(group)`: raise `ValueError` for a bad hyperparameter;
    - `_state_keys(group) -> tuple[str, ...]`: the keys a parameter's state holds under it;
    - `_update(param, grad, group, state)`: change `param.data` in place, usually by handing
      an elementwise rule to `_blockwise`.
    """

    def __init__(self, params: Iterable[Any], defaults: Mapping[str, Any]) -> None:
        self.defaults: dict[str, Any] = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        # Reusable scratch memory for the update arithmetic, one flat buffer per (dtype, slot),
        # the size of one block (see `_blockwise`): steps allocate nothing after the first.
        self._workspace: dict[tuple[np.dtype, int], np.ndarray] = {}

        if _is_param(params) or isinstance(params, (np.ndarray, Mapping, str)):
            raise TypeError(
                "params must be an iterable of parameters or of param-group dicts, "
                f"not a single {type(params).__name__}"
            )
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], Mapping) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    # ----------------------------------------------------------------------------- groups

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Add a group of parameters; keys it leaves out take the optimiser's defaults."""
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"a param group must be a dict with a 'params' entry, got {group!r}")
        unknown = set(group) - set(self.defaults) - _FREE_KEYS - {"params"}
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for {type(self).__name__}; "
                f"expected some of {sorted(self.defaults)}"
            )
        params = group["params"]
        params = [params] if _is_param(params) else list(params)
        for i, p in enumerate(params):
            if not _is_param(p):
                raise TypeError(
                    f"param {i} of a group is a {type(p).__name__}; expected an object with "
                    "a numpy array .data and a .grad"
                )
            if not np.issubdtype(p.data.dtype, np.floating):
                raise TypeError(
                    f"param {i} of a group has dtype {p.data.dtype}; "
                    "only floating-point parameters can be optimised"
                )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError(
                "some parameters appear in more than one place in the optimizer's groups"
            )

        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._validate_group(full)
        full["params"] = params
        self.param_groups.append(full)

    def zero_grad(self) -> None:
        """Forget every gradient (sets `.grad = None`), so the next backward starts afresh."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    # ----------------------------------------------------------------------------- stepping

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if not isinstance(grad, np.ndarray) or grad.shape != p.data.shape:
                    shape = getattr(grad, "shape", type(grad).__name__)
                    raise ValueError(
                        f"gradient of shape {shape} does not match "
                        f"its parameter's shape {p.data.shape}"
                    )
                self._update(p, grad, group, self.state.setdefault(id(p), {}))

    def _scratch(self, like: np.ndarray, slot: int) -> np.ndarray:
        """A scratch array shaped and typed like `like`; its contents are left from earlier use."""
        key = (like.dtype, slot)
        buffer = self._workspace.get(key)
        if buffer is None or buffer.size < like.size:
            buffer = np.empty(like.size, dtype=like.dtype)
            self._workspace[key] = buffer
        return buffer[: like.size].reshape(like.shape)

    def _blockwise(
        self, rule: Callable[..., None], arrays: list[np.ndarray], n_scratch: int
    ) -> None:
        """Run an elementwise `rule(*arrays, *scratch)` over cache-sized blocks of `arrays`.

        `arrays[0]` is the parameter's data, updated in place; the others are the gradient and
        the state arrays (None for a state array a setting does not use). An update rule is a dozen passes over memory; done on a whole large
        parameter each pass streams every array through RAM again, while on a block of about
        1 MiB the arrays stay in cache between passes. The arithmetic per element is the same,
        so the result is identical for any block size.
        """
        theta = arrays[0]
        writable = [theta] + [a for a in arrays[2:] if a is not None]
        if not all(a.flags.c_contiguous for a in writable):
            # Flattening a non-contiguous array would copy it and lose the in-place writes.
            rule(*arrays, *(self._scratch(theta, k) for k in range(n_scratch)))
            return
        # Views, except that a non-contiguous gradient (read only) is copied. None stays None.
        flat = [None if a is None else a.reshape(-1) for a in arrays]
        n = theta.size
        block = max(1, min(n, _BLOCK_BYTES // theta.itemsize))
        scratch = [self._scratch(flat[0][:block], k) for k in range(n_scratch)]
        for start in range(0, n, block):
            stop = min(start + block, n)
            rule(
                *(None if a is None else a[start:stop] for a in flat),
                *(b[: stop - start] for b in scratch),
            )

    # subclass hooks
    def _validate_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:  # pragma: no cover
        raise NotImplementedError

    def _update(
        self, p: Any, grad: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> None:
        raise NotImplementedError  # pragma: no cover

    # ----------------------------------------------------------------------------- saving

    def state_dict(self) -> dict[str, Any]:
        """`{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`, as in torch.

        Arrays are copies, so the result stays a snapshot while training continues.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {
            index[pid]: {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in s.items()}
            for pid, s in self.state.items()
            if pid in index and s
        }
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and state saved by `state_dict()`.

        Everything is checked before anything changes: the number of groups and of parameters
        per group, each state entry's keys, and each array's shape against its parameter's.
        A mismatch raises `ValueError` naming the group or parameter index.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(
                "an optimizer state dict has exactly the keys 'state' and 'param_groups'"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(saved_groups)} param groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        params: list[Any] = []
        new_groups = []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved_ids = list(saved.get("params", []))
            if len(saved_ids) != len(group["params"]):
                raise ValueError(
                    f"param group {g} has {len(saved_ids)} params in the state dict "
                    f"but {len(group['params'])} in this optimizer"
                )
            options = {k: v for k, v in saved.items() if k != "params"}
            # JSON turns tuples such as betas into lists; hyperparameters are tuples here.
            options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
            unknown = set(options) - set(self.defaults) - _FREE_KEYS
            if unknown:
                raise ValueError(
                    f"param group {g} has options {sorted(unknown)} "
                    f"unknown to {type(self).__name__}"
                )
            full = {**self.defaults, **options}
            self._validate_group(full)
            full["params"] = group["params"]
            new_groups.append(full)
            params.extend((p, full) for p in group["params"])

        new_state: dict[int, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(
                    f"state dict has state for param {key}, "
                    f"but there are only {len(params)} params"
                )
            p, group = params[i]
            new_state[id(p)] = self._check_entry(i, entry, p, group)

        self.param_groups = new_groups
        self.state = new_state

    def _check_entry(
        self, i: int, entry: Mapping[str, Any], p: Any, group: Mapping[str, Any]
    ) -> dict[str, Any]:
        expected = set(self._state_keys(group))
        if set(entry) != expected:
            raise ValueError(
                f"state of param {i} has keys {sorted(entry)}, expected {sorted(expected)} "
                f"for {type(self).__name__}"
            )
        out: dict[str, Any] = {}
        for k, v in entry.items():
            if k == "step":
                step = float(v)
                if not (step >= 0 and step.is_integer()):
                    raise ValueError(
                        f"state of param {i}: step {v!r} is not a non-negative integer"
                    )
                out[k] = int(step)
                continue
            v = np.asarray(v)
            if v.shape != p.data.shape:
                raise ValueError(
                    f"state of param {i}: {k!r} has shape {v.shape} "
                    f"but the param has shape {p.data.shape}"
                )
            # State lives in the parameter's dtype (float32 parameters keep float32 moments).
            out[k] = np.array(v, dtype=p.data.dtype, copy=True)
        return out

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for g, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v!r}" for k, v in group.items() if k != "params")
            lines.append(f"  group {g}: {len(group['params'])} params, {options}")
        return "\n".join(lines) + "\n)"


def _check_non_negative(name: str, value: Any) -> None:
    """Shared hyperparameter check: a real number >= 0 (NaN fails, as it should)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"invalid {name}: {value!r} (must be a finite number >= 0)")
