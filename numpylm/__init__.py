"""numpylm: language models in plain NumPy, written to be read beside a guide and to be trusted."""
from numpylm import functional
from numpylm.autograd import Tensor, gradcheck, no_grad

__version__ = "0.1.0"

__all__ = ["Tensor", "no_grad", "gradcheck", "functional", "__version__"]
