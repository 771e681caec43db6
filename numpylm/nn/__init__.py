"""Neural-network building blocks: `Module`, `Parameter` and the basic layers."""
from numpylm.nn.layers import (Dropout, Embedding, LayerNorm, Linear, ModuleList, RMSNorm,
                               Sequential, get_rng, manual_seed)
from numpylm.nn.module import Module, Parameter, evaluating

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout",
           "Sequential", "ModuleList", "manual_seed", "get_rng", "evaluating"]
from numpylm.nn.rnn import GRU, LSTM, RNN  # noqa: E402
from numpylm.nn.rnn_cells import GRUCell, LSTMCell, RNNCell  # noqa: E402
__all__ += ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU"]
