"""Language models, from counts to transformers, all sharing one interface where they can."""
from numpylm.models.ngram import NGramLM
