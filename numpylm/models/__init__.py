"""Language models, from counts to transformers, all sharing one interface where they can."""
from numpylm.models.ngram import NGramLM
from numpylm.models.bigram import BigramLM
from numpylm.models.mlp import MLPLM
from numpylm.models.rnn_lm import RNNLM, detach_state, stream_batches  # noqa: E402
from numpylm.models.gpt import GPT, GPTConfig  # noqa: E402
from numpylm.models.gpt2_io import load_pretrained  # noqa: E402
