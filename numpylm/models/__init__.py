"""Language models, from counts to transformers, all sharing one interface where they can."""
from numpylm.models.ngram import NGramLM
from numpylm.models.bigram import BigramLM
from numpylm.models.mlp import MLPLM
from numpylm.models.rnn_lm import RNNLM, detach_state, stream_batches
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.pretrained import load_pretrained
from numpylm.models.llama import Llama, LlamaConfig

__all__ = ["NGramLM", "BigramLM", "MLPLM", "RNNLM", "detach_state", "stream_batches", "GPT",
           "GPTConfig", "load_pretrained", "Llama", "LlamaConfig"]
