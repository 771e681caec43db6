"""The inputs `numpylm gradcheck` tries each registered op on: a registry, filled beside the ops.

A builder takes a `numpy.random.Generator` and returns `(fn, inputs)` such that
`gradcheck(fn, *inputs)` exercises the op, with inputs kept inside the op's domain (positive
for log and sqrt, away from the kink of relu, without ties for max). An op module registers
its builders with `@gradcheck_inputs("op_name")`; the builders of the primitive ops are in
`numpylm.autograd.op_inputs`. (These are test inputs for gradient checks, nothing to do with
sampling tokens.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

GRADCHECK_INPUTS: dict[str, Callable[[np.random.Generator], tuple]] = {}


def gradcheck_inputs(name: str) -> Callable:
    """Register a builder of gradcheck inputs for the op called `name`."""
    def register(builder: Callable) -> Callable:
        GRADCHECK_INPUTS[name] = builder
        return builder
    return register
