"""A recurrent language model, part 1 of the guide: read the text one token at a time and keep
what matters of everything read so far in a fixed-size state (Mikolov et al. 2010; for the LSTM
language model, Sundermeyer et al. 2012; for character models, Graves 2013).

    e_t            = embedding[idx_t]                         (B, T, C)
    h_t, state_t   = cell(e_t, state_{t-1}), num_layers deep  (B, T, H)
    logits_t       = h_t W_head^T + b_head                    (B, T, V)
    loss           = mean over t of -log softmax(logits_t)[targets_t]

Unlike the n-gram and MLP models, the context is not a fixed window: in principle h_t depends
on every earlier token. In practice it is trained by *truncated* backpropagation through time
(Williams & Peng 1990): the text is cut into consecutive chunks of T tokens, the state at the end
of one chunk becomes the start of the next, but it is detached, so gradients flow back at most
T steps while the state still carries information further. `stream_batches` cuts the text
that way and `detach_state` cuts the graph.

The interface is the shared one, `forward(idx, targets=None) -> (logits, loss)`, so the generic
training loop and `numpylm.inference.generate` work with it (generate then reruns the whole
context for every token). The carried state is an extra, optional argument:
- `forward(idx, targets=None, state=None)`: `state` is where to start (None: zeros); the final
  state is left in `self.last_state` (still attached to the graph; detach it to carry it);
- `forward_with_state(idx, targets=None, state=None) -> (logits, loss, final_state)`;
- `generate(idx, max_new_tokens, ...)` samples with the state carried, one token per step.
A state is a Tensor (num_layers, B, H) for "rnn" and "gru", a pair (h, c) for "lstm".
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.inference.sampling import sample_next
from numpylm.nn.layers import Embedding, Linear, get_rng
from numpylm.nn.module import Module, evaluating
from numpylm.nn.rnn import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
State = Any


def detach_state(state: State) -> State:
    """The same state cut off from the graph, so the next chunk's backward stops here."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(s.detach() for s in state)
    return state.detach()


class RNNLM(Module):
    """Embedding, a stack of recurrent layers ("rnn" tanh, "lstm" or "gru"), a linear head.

    Parameters: `embedding.weight` (V, C), `rnn.weight_ih_l{k}` and the rest with PyTorch's
    names (see `numpylm.nn.rnn`), `head.weight` (V, H), `head.bias` (V,).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int,
                 cell: str = "lstm", num_layers: int = 1, fused: bool = True,
                 dtype: Any = np.float32, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"RNNLM: unknown cell {cell!r}; expected one of "
                             f"{', '.join(sorted(CELLS))}")
        if vocab_size < 1 or embedding_dim < 1 or hidden_size < 1:
            raise ValueError(f"RNNLM: vocab_size, embedding_dim and hidden_size must be "
                             f"positive, got {vocab_size}, {embedding_dim}, {hidden_size}")
        rng = get_rng(rng)
        self.vocab_size, self.cell = vocab_size, cell
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, rng=rng)
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                               fused=fused, dtype=dtype, rng=rng)
        self.head = Linear(hidden_size, vocab_size, dtype=dtype, rng=rng)
        self.last_state: State = None

    def _check_ids(self, idx: Any, what: str) -> np.ndarray:
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim != 2:
            raise ValueError(f"RNNLM: expected {what} of shape (B, T), got {idx.shape}")
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"RNNLM: {what} must be integer token ids, got dtype {idx.dtype}")
        return idx

    def forward_with_state(self, idx: Any, targets: Any = None,
                           state: State = None) -> tuple[Tensor, Tensor | None, State]:
        """idx (B, T) ints -> (logits (B, T, V), mean cross-entropy or None, final state)."""
        idx = self._check_ids(idx, "idx")
        x = self.embedding(idx)                 # (B, T, C)
        h, final = self.rnn(x, state)           # (B, T, H), state of the last step
        logits = self.head(h)                   # (B, T, V)
        loss = None
        if targets is not None:
            targets = self._check_ids(targets, "targets")
            if targets.shape != idx.shape:
                raise ValueError(f"RNNLM: targets of shape {targets.shape} do not match "
                                 f"idx of shape {idx.shape}")
            loss = F.cross_entropy(logits, targets)
        return logits, loss, final

    def forward(self, idx: Any, targets: Any = None,
                state: State = None) -> tuple[Tensor, Tensor | None]:
        """The shared interface; the final state is kept in `self.last_state`."""
        logits, loss, self.last_state = self.forward_with_state(idx, targets, state)
        return logits, loss

    def generate(self, idx: Any, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int | np.random.Generator | None = None,
                 state: State = None) -> np.ndarray:
        """Continue every row of idx (B, T) by `max_new_tokens` sampled tokens; return
        (B, T + max_new_tokens). The prompt is read once, then each new token costs one step,
        because the state carries the whole context. Sampling is `numpylm.inference.sample_next`
        (`temperature=0` is greedy); `seed` makes it repeatable."""
        idx = self._check_ids(idx, "idx")
        if idx.shape[1] == 0:
            raise ValueError("RNNLM.generate: the prompt must hold at least one token")
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"RNNLM.generate: max_new_tokens must be an integer >= 0, "
                             f"got {max_new_tokens!r}")
        rng = np.random.default_rng(seed)  # a Generator passes through as it is
        out = [idx]
        with evaluating(self):
            logits, _, state = self.forward_with_state(idx, state=state)
            for _ in range(max_new_tokens):
                token = sample_next(logits.data[:, -1], temperature, top_k, top_p, rng)
                out.append(token[:, None])
                logits, _, state = self.forward_with_state(token[:, None], state=state)
        self.last_state = state
        return np.concatenate(out, axis=1)

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}"


def stream_batches(ids: np.ndarray, batch_size: int,
                   seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive chunks for truncated BPTT: (x, y), each (B, T), y shifted by one.

    The text is cut into B equal streams laid side by side; chunk k is tokens [kT, (k+1)T) of
    every stream, so row b of one chunk continues row b of the previous one and the state can
    be carried across. With ids = 0, 1, ..., 12 (13 tokens), B = 2 and T = 2, each stream has
    (13 - 1) // 2 = 6 input positions (stream 0 reads 0..5, stream 1 reads 6..11), which make
    three chunks:
        x [[0, 1], [6, 7]]     y [[1, 2], [7, 8]]
        x [[2, 3], [8, 9]]     y [[3, 4], [9, 10]]
        x [[4, 5], [10, 11]]   y [[5, 6], [11, 12]]
    """
    ids = np.asarray(ids)
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"stream_batches: batch_size and seq_len must be >= 1, "
                         f"got {batch_size}, {seq_len}")
    n = (len(ids) - 1) // batch_size        # tokens per stream that have a next token
    chunks = n // seq_len
    if chunks == 0:
        raise ValueError(f"stream_batches: {len(ids)} tokens are too few for {batch_size} "
                         f"streams of at least {seq_len + 1} tokens")
    starts = np.arange(batch_size) * n      # where each stream begins
    for k in range(chunks):
        window = starts[:, None] + k * seq_len + np.arange(seq_len)   # (B, T) positions
        yield ids[window], ids[window + 1]
