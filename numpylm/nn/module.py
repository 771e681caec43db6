"""Modules: objects that own parameters, so a model is a tree of named arrays.

Assigning a `Parameter` or a `Module` to an attribute registers it, in assignment order;
`named_parameters()` walks the tree and gives the dotted names (`h.0.attn.c_attn.weight`)
that `state_dict()` uses, so weights interchange with other implementations by name.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from numpylm.autograd.tensor import Tensor, no_grad


class Parameter(Tensor):
    """A tensor that is a model's learnable state: it always requires grad."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer and model.

    Subclasses set parameters and sub-modules as attributes in `__init__` and define
    `forward`; calling the module calls `forward`.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() "
                               f"before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ---- walking the tree --------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs in registration order; a parameter shared by two
        modules (tied weights) is listed once, under its first name."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # ---- modes and gradients -----------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, dtype: Any) -> "Module":
        """Convert every parameter to `dtype` in place (float64 for gradient checks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    # ---- state dicts -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Dotted name -> array (the arrays themselves, not copies)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, list]:
        """Copy arrays into the parameters by name, keeping each parameter's dtype.

        With `strict`, any missing, unexpected or wrongly shaped key raises a `ValueError`
        listing all of them; otherwise matching keys load and the lists are returned.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        bad = {k for k, v in state.items() if k in own and np.shape(v) != own[k].shape}
        mismatched = [f"{k}: expected {own[k].shape}, got {tuple(np.shape(state[k]))}"
                      for k in state if k in bad]
        if strict and (missing or unexpected or mismatched):
            lines = [f"{type(self).__name__}.load_state_dict: the state dict does not fit"]
            if missing:
                lines.append("  missing keys: " + ", ".join(missing))
            if unexpected:
                lines.append("  unexpected keys: " + ", ".join(unexpected))
            if mismatched:
                lines.append("  mis-shaped keys: " + "; ".join(mismatched))
            raise ValueError("\n".join(lines))
        for k, v in state.items():
            if k in own and k not in bad:
                p = own[k]
                p.data[...] = np.asarray(v.data if isinstance(v, Tensor) else v, dtype=p.dtype)
        return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """Eval mode (no dropout) and no graph recording for one `with` block, then the model's
    mode as it was. A model already in eval mode is left alone (no walk over its modules),
    and so is one without modes at all (a count-based n-gram)."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with no_grad():
            yield model
    finally:
        if was_training:
            model.train(True)
