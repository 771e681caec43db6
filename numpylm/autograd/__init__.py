"""The autograd engine: `Tensor`, the registered ops, and `gradcheck`."""
from numpylm.autograd.graph import to_dot
from numpylm.autograd.gradcheck import GradcheckError, GradcheckResult, gradcheck
from numpylm.autograd.op import REGISTRY, op, unbroadcast
from numpylm.autograd.tensor import Tensor, is_grad_enabled, no_grad

# Importing the op modules fills REGISTRY.
from numpylm.autograd import ops_math, ops_nn, ops_reduce, ops_shape  # noqa: E402,F401
from numpylm.autograd import ops_attention, ops_linear, ops_rnn  # noqa: E402,F401
from numpylm.autograd import ops_rope  # noqa: E402,F401
from numpylm.autograd import op_inputs  # noqa: E402,F401  (gradcheck inputs of the ops above)

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "op", "REGISTRY", "unbroadcast",
           "gradcheck", "GradcheckError", "GradcheckResult", "to_dot"]
