"""Small random inputs for each registered op, used by `numpylm gradcheck` to print a table.

Each sample builder takes a `numpy.random.Generator` and returns `(fn, inputs)` such that
`gradcheck(fn, *inputs)` exercises the op, with inputs kept inside the op's domain (positive
for log and sqrt, away from the kink of relu, without ties for max).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from numpylm import functional as F

SAMPLES: dict[str, Callable[[np.random.Generator], tuple]] = {}


def sample(name: str) -> Callable:
    """Register a sample-input builder for the op called `name`."""
    def register(builder: Callable) -> Callable:
        SAMPLES[name] = builder
        return builder
    return register


def _away_from_zero(rng: np.random.Generator, shape, margin: float = 0.1) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin, x) + 0.0


for _name in ("add", "sub", "mul"):
    sample(_name)(lambda rng, n=_name: (
        getattr(F, n), (rng.standard_normal((3, 1, 4)), rng.standard_normal((2, 4)))))
sample("div")(lambda rng: (F.div, (rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, (1, 4)))))
sample("neg")(lambda rng: (F.neg, (rng.standard_normal((3, 4)),)))
sample("pow")(lambda rng: (lambda x: F.pow(x, 3.0), (rng.uniform(0.5, 2.0, (3, 4)),)))
sample("exp")(lambda rng: (F.exp, (rng.standard_normal((3, 4)),)))
sample("log")(lambda rng: (F.log, (rng.uniform(0.5, 3.0, (3, 4)),)))
sample("sqrt")(lambda rng: (F.sqrt, (rng.uniform(0.5, 3.0, (3, 4)),)))
for _name in ("tanh", "sigmoid", "gelu"):
    sample(_name)(lambda rng, n=_name: (getattr(F, n), (rng.standard_normal((3, 4)),)))
sample("relu")(lambda rng: (F.relu, (_away_from_zero(rng, (3, 4)),)))
sample("matmul")(lambda rng: (F.matmul, (rng.standard_normal((2, 3, 4)),
                                         rng.standard_normal((4, 5)))))
sample("sum")(lambda rng: (lambda x: F.sum(x, axis=1), (rng.standard_normal((3, 4)),)))
sample("mean")(lambda rng: (lambda x: F.mean(x, axis=0, keepdims=True),
                            (rng.standard_normal((3, 4)),)))
sample("max")(lambda rng: (lambda x: F.max(x, axis=-1), (rng.standard_normal((3, 4)),)))
sample("logsumexp")(lambda rng: (F.logsumexp, (rng.standard_normal((3, 4)),)))
sample("reshape")(lambda rng: (lambda x: F.reshape(x, shape=(4, 3)),
                               (rng.standard_normal((3, 4)),)))
sample("transpose")(lambda rng: (lambda x: F.transpose(x, axes=(2, 0, 1)),
                                 (rng.standard_normal((2, 3, 4)),)))
sample("getitem")(lambda rng: (lambda x: F.getitem(x, (np.array([0, 2, 0]), slice(1, 3))),
                               (rng.standard_normal((3, 4)),)))
sample("concatenate")(lambda rng: (lambda a, b: F.concatenate([a, b], axis=1),
                                   (rng.standard_normal((2, 3)), rng.standard_normal((2, 2)))))
sample("stack")(lambda rng: (lambda a, b: F.stack([a, b], axis=1),
                             (rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))))
sample("where")(lambda rng: (lambda a, b: F.where(np.array([True, False, True]), a, b),
                             (rng.standard_normal((2, 3)), rng.standard_normal(3))))
sample("embedding")(lambda rng: (lambda w: F.embedding(np.array([[1, 0, 1], [4, 4, 2]]), w),
                                 (rng.standard_normal((5, 3)),)))
sample("astype")(lambda rng: (lambda x: F.astype(x, dtype=np.float64),
                              (rng.standard_normal((3, 4)),)))
sample("softmax")(lambda rng: (F.softmax, (rng.standard_normal((3, 4)),)))
sample("log_softmax")(lambda rng: (F.log_softmax, (rng.standard_normal((3, 4)),)))
sample("cross_entropy")(lambda rng: (lambda x: F.cross_entropy(x, np.array([[0, 3], [2, 1]])),
                                     (rng.standard_normal((2, 2, 4)),)))
sample("layer_norm")(lambda rng: (F.layer_norm, (rng.standard_normal((3, 5)),
                                                 rng.standard_normal(5), rng.standard_normal(5))))
sample("rms_norm")(lambda rng: (F.rms_norm, (rng.standard_normal((3, 5)),
                                             rng.standard_normal(5))))
sample("dropout")(lambda rng: (
    lambda x: F.dropout(x, 0.3, True, np.random.default_rng(7)), (rng.standard_normal((3, 4)),)))
