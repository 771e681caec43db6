"""Matrix products of few rows: `x @ W.T` against `numpylm.blas.matmul_rows` for 1-24 rows, at
the shapes inference multiplies (a character GPT's 128-wide projections, SmolLM2's fused q/k/v,
gate/up and LM head), with one and two BLAS threads.

    python benchmarks/bench_rows.py [--rows 24] [--repeats 5]

Prints microseconds per product, plain then matmul_rows, and their ratio, for each row count.
On this machine's OpenBLAS the plain product's time jumps wherever the row count is not a
multiple of 4 per thread (2 rows cost about as much as 8); matmul_rows multiplies up to
STACKED_ROWS rows one matrix-vector product each and pads the rest to the next multiple.
Run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` on a quiet machine. Not part of the
test suite.
"""
from __future__ import annotations

import argparse
import timeit

import numpy as np

from numpylm import blas

SHAPES = {  # name: (out, in) of a weight stored as Linear keeps it, multiplied as x @ W.T
    "GPT c_attn 384 x 128": (384, 128),
    "SmolLM2 q/k/v 960 x 576": (960, 576),
    "SmolLM2 gate/up 3072 x 576": (3072, 576),
    "SmolLM2 LM head 49152 x 576": (49152, 576),
}


def per_product(fn, n_floats: int, repeats: int) -> float:
    """Best microseconds of one call, each timing long enough to be read (~20 ms)."""
    number = max(2, int(5e6 / n_floats))
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if blas.find_openblas() is None:
        print("OpenBLAS not found: the thread counts below are whatever the BLAS uses")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        with blas.threads(threads):
            print(f"\n{threads} BLAS thread(s): microseconds, plain x @ W.T / matmul_rows "
                  f"(ratio plain / matmul_rows)")
            for name, (out, inp) in SHAPES.items():
                w = rng.standard_normal((out, inp)).astype(np.float32)
                cells = []
                for rows in range(1, args.rows + 1):
                    x = rng.standard_normal((rows, inp)).astype(np.float32)
                    plain = per_product(lambda: x @ w.T, w.size, args.repeats)
                    ours = per_product(lambda: blas.matmul_rows(x, w.T), w.size, args.repeats)
                    cells.append(f"{rows}: {plain:.0f}/{ours:.0f} ({plain / ours:.1f}x)")
                print(f"  {name}")
                for start in range(0, len(cells), 6):
                    print("    " + "  ".join(cells[start:start + 6]))


if __name__ == "__main__":
    main()
