"""Neural-network building blocks: `Module`, `Parameter` and the basic layers."""
from numpylm.nn.layers import (Dropout, Embedding, LayerNorm, Linear, ModuleList, RMSNorm,
                               Sequential, get_rng, manual_seed)
from numpylm.nn.module import Module, Parameter

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout",
           "Sequential", "ModuleList", "manual_seed", "get_rng"]
