"""numpylm: language models in plain NumPy, written to be read beside a guide and to be trusted.

The names a reader reaches for first are here; everything else lives in its subpackage:
`numpylm.autograd` (the engine), `numpylm.functional` (every op as a function), `numpylm.nn`,
`numpylm.optim`, `numpylm.io`, `numpylm.tokenizers`, `numpylm.models`, `numpylm.training`,
`numpylm.inference`, `numpylm.evaluation`.
"""
from numpylm import functional, nn, optim
from numpylm.autograd import Tensor, gradcheck, no_grad, to_dot
from numpylm.evaluation import bits_per_byte, bits_per_char, evaluate_text, perplexity
from numpylm.inference import KVCache, generate, generate_stream
from numpylm.io import load_safetensors, save_safetensors
from numpylm.models import GPT, MLPLM, RNNLM, BigramLM, GPTConfig, NGramLM, load_pretrained
from numpylm.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, Module, Parameter, RNNCell
from numpylm.optim import SGD, Adam, AdamW, clip_grad_norm_
from numpylm.tokenizers import (GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, CharTokenizer,
                                load_tokenizer)
from numpylm.training import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "Tensor", "no_grad", "gradcheck", "to_dot", "functional", "nn", "optim",
    "Module", "Parameter", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "SGD", "Adam", "AdamW", "clip_grad_norm_",
    "save_safetensors", "load_safetensors",
    "CharTokenizer", "BPETokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "load_tokenizer",
    "NGramLM", "BigramLM", "MLPLM", "RNNLM", "GPT", "GPTConfig", "load_pretrained",
    "TrainConfig", "train", "generate", "generate_stream", "KVCache",
    "perplexity", "bits_per_char", "bits_per_byte", "evaluate_text", "__version__",
]
