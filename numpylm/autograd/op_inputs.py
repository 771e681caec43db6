"""Gradcheck inputs for the primitive and fused ops of `numpylm.autograd` (see
`numpylm.autograd.gradcheck_inputs`)."""
from __future__ import annotations

import numpy as np

from numpylm.autograd import ops_math, ops_nn, ops_reduce, ops_shape
from numpylm.autograd.gradcheck_inputs import gradcheck_inputs


def _away_from_zero(rng: np.random.Generator, shape, margin: float = 0.1) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin, x) + 0.0


for _name in ("add", "sub", "mul"):
    gradcheck_inputs(_name)(lambda rng, n=_name: (
        getattr(ops_math, n), (rng.standard_normal((3, 1, 4)), rng.standard_normal((2, 4)))))
gradcheck_inputs("div")(lambda rng: (ops_math.div, (rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, (1, 4)))))
gradcheck_inputs("neg")(lambda rng: (ops_math.neg, (rng.standard_normal((3, 4)),)))
gradcheck_inputs("pow")(lambda rng: (lambda x: ops_math.pow(x, 3.0), (rng.uniform(0.5, 2.0, (3, 4)),)))
gradcheck_inputs("exp")(lambda rng: (ops_math.exp, (rng.standard_normal((3, 4)),)))
gradcheck_inputs("log")(lambda rng: (ops_math.log, (rng.uniform(0.5, 3.0, (3, 4)),)))
gradcheck_inputs("sqrt")(lambda rng: (ops_math.sqrt, (rng.uniform(0.5, 3.0, (3, 4)),)))
for _name in ("tanh", "sigmoid", "gelu"):
    gradcheck_inputs(_name)(lambda rng, n=_name: (getattr(ops_math, n), (rng.standard_normal((3, 4)),)))
gradcheck_inputs("relu")(lambda rng: (ops_math.relu, (_away_from_zero(rng, (3, 4)),)))
gradcheck_inputs("matmul")(lambda rng: (ops_math.matmul, (rng.standard_normal((2, 3, 4)),
                                         rng.standard_normal((4, 5)))))
gradcheck_inputs("sum")(lambda rng: (lambda x: ops_reduce.sum(x, axis=1), (rng.standard_normal((3, 4)),)))
gradcheck_inputs("mean")(lambda rng: (lambda x: ops_reduce.mean(x, axis=0, keepdims=True),
                            (rng.standard_normal((3, 4)),)))
gradcheck_inputs("max")(lambda rng: (lambda x: ops_reduce.max(x, axis=-1), (rng.standard_normal((3, 4)),)))
gradcheck_inputs("logsumexp")(lambda rng: (ops_reduce.logsumexp, (rng.standard_normal((3, 4)),)))
gradcheck_inputs("reshape")(lambda rng: (lambda x: ops_shape.reshape(x, shape=(4, 3)),
                               (rng.standard_normal((3, 4)),)))
gradcheck_inputs("transpose")(lambda rng: (lambda x: ops_shape.transpose(x, axes=(2, 0, 1)),
                                 (rng.standard_normal((2, 3, 4)),)))
gradcheck_inputs("getitem")(lambda rng: (lambda x: ops_shape.getitem(x, (np.array([0, 2, 0]), slice(1, 3))),
                               (rng.standard_normal((3, 4)),)))
gradcheck_inputs("concatenate")(lambda rng: (lambda a, b: ops_shape.concatenate([a, b], axis=1),
                                   (rng.standard_normal((2, 3)), rng.standard_normal((2, 2)))))
gradcheck_inputs("stack")(lambda rng: (lambda a, b: ops_shape.stack([a, b], axis=1),
                             (rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))))
gradcheck_inputs("where")(lambda rng: (lambda a, b: ops_shape.where(np.array([True, False, True]), a, b),
                             (rng.standard_normal((2, 3)), rng.standard_normal(3))))
gradcheck_inputs("embedding")(lambda rng: (lambda w: ops_shape.embedding(np.array([[1, 0, 1], [4, 4, 2]]), w),
                                 (rng.standard_normal((5, 3)),)))
gradcheck_inputs("astype")(lambda rng: (lambda x: ops_shape.astype(x, dtype=np.float64),
                              (rng.standard_normal((3, 4)),)))
gradcheck_inputs("softmax")(lambda rng: (ops_nn.softmax, (rng.standard_normal((3, 4)),)))
gradcheck_inputs("log_softmax")(lambda rng: (ops_nn.log_softmax, (rng.standard_normal((3, 4)),)))
gradcheck_inputs("cross_entropy")(lambda rng: (lambda x: ops_nn.cross_entropy(x, np.array([[0, 3], [2, 1]])),
                                     (rng.standard_normal((2, 2, 4)),)))
gradcheck_inputs("layer_norm")(lambda rng: (ops_nn.layer_norm, (rng.standard_normal((3, 5)),
                                                 rng.standard_normal(5), rng.standard_normal(5))))
gradcheck_inputs("rms_norm")(lambda rng: (ops_nn.rms_norm, (rng.standard_normal((3, 5)),
                                             rng.standard_normal(5))))
gradcheck_inputs("dropout")(lambda rng: (
    lambda x: ops_nn.dropout(x, 0.3, True, np.random.default_rng(7)), (rng.standard_normal((3, 4)),)))
