"""Every differentiable op as a plain function, numpy-style (`axis=`, `keepdims=`).

`import numpylm.functional as F` and write `F.softmax(x, axis=-1)`, `F.cross_entropy(logits,
targets)`. The composite ops here are the fused versions; their readable compositions of
primitives are in `numpylm.autograd.composed`. The Llama family's ops are `rms_norm`, `silu`,
`swiglu`, `rope` (its tables and weight conversions in `numpylm.autograd.ops_rope`) and
`scaled_dot_product_attention` with fewer key-value heads than query heads.
"""
from numpylm.autograd.ops_math import (add, div, exp, gelu, log, matmul, mul, neg, pow, relu,
                                       sigmoid, sqrt, sub, tanh)
from numpylm.autograd.ops_nn import (cross_entropy, dropout, layer_norm, log_softmax, rms_norm,
                                     silu, softmax, swiglu)
from numpylm.autograd.ops_attention import scaled_dot_product_attention
from numpylm.autograd.ops_rope import rope
from numpylm.autograd.ops_reduce import logsumexp, max, mean, sum
from numpylm.autograd.ops_shape import (astype, concatenate, embedding, getitem, masked_fill,
                                        reshape, split, stack, transpose, where)

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid",
    "relu", "gelu", "sum", "mean", "max", "logsumexp", "reshape", "transpose", "getitem",
    "concatenate", "stack", "split", "where", "masked_fill", "embedding", "astype", "softmax",
    "log_softmax", "cross_entropy", "layer_norm", "rms_norm", "dropout",
    "scaled_dot_product_attention", "silu", "swiglu", "rope",
]
