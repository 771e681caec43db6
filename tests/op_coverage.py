"""Bookkeeping for the rule that every registered op has a finite-difference property test.

A test marks the op it proves with `@covers_op("name")`; `test_op_coverage.py` imports every
test module and fails for any op in `numpylm.autograd.REGISTRY` that no test covers.
"""
from typing import Callable

COVERED: set[str] = set()


def covers_op(*names: str) -> Callable:
    def mark(test: Callable) -> Callable:
        COVERED.update(names)
        return test
    return mark
