"""`numpylm gradcheck`: prove every registered op's backward rule on random inputs."""
from __future__ import annotations

import argparse

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="check every registered op's gradient against finite differences",
        description="Runs the finite-difference gradient check (central differences in "
                    "float64) over every registered op on small random inputs and prints "
                    "one line per op. Exits with status 1 if any op fails.")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--ops", nargs="*", metavar="OP", help="check only these ops")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpylm  # noqa: F401  (importing the package registers every op)
    from numpylm.autograd import REGISTRY, gradcheck
    from numpylm.autograd.gradcheck_inputs import GRADCHECK_INPUTS

    names = sorted(REGISTRY) if not args.ops else args.ops
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown op(s): {', '.join(unknown)}; registered: {', '.join(sorted(REGISTRY))}")
        return 2
    width = max(len(n) for n in names)
    print(f"{'op':<{width}}  {'max abs err':>11}  {'max rel err':>11}  result")
    failures = 0
    for name in names:
        builder = GRADCHECK_INPUTS.get(name)
        if builder is None:
            print(f"{name:<{width}}  {'-':>11}  {'-':>11}  FAIL (no sample input registered)")
            failures += 1
            continue
        fn, inputs = builder(np.random.default_rng(args.seed))
        try:
            result = gradcheck(fn, *inputs, raise_exception=False)
        except Exception as exc:  # an op that crashes fails the table, it does not end it
            print(f"{name:<{width}}  {'-':>11}  {'-':>11}  FAIL ({type(exc).__name__}: {exc})")
            failures += 1
            continue
        status = "pass" if result.passed else f"FAIL ({result.message})"
        failures += not result.passed
        print(f"{name:<{width}}  {result.max_abs_error:11.2e}  {result.max_rel_error:11.2e}  "
              f"{status}")
    print(f"{len(names) - failures} of {len(names)} ops pass")
    return 1 if failures else 0
