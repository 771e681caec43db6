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

The interface is the shared one (`numpylm.models.base`): `forward(idx, targets=None) ->
(logits, loss)` for the training loop, and `init_state`/`step` for decoding, where the state is
the hidden state itself: a new token costs one step of the recurrence, whatever came before.
The carried state is also an extra, optional argument of the forward pass:
- `forward(idx, targets=None, state=None)`: `state` is where to start (None: zeros); the final
  state is left in `self.last_state` (still attached to the graph; detach it to carry it);
- `forward_with_state(idx, targets=None, state=None) -> (logits, loss, final_state)`.
A state is a Tensor (num_layers, B, H) for "rnn" and "gru", a pair (h, c) for "lstm".
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.models import rnn_inference
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.nn.layers import Embedding, Linear, get_rng
from numpylm.nn.module import Module
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

    def forward_with_state(self, idx: Any, targets: Any = None,
                           state: State = None) -> tuple[Tensor, Tensor | None, State]:
        """idx (B, T) ints -> (logits (B, T, V), mean cross-entropy or None, final state)."""
        idx, targets = check_ids("RNNLM", idx, targets, self.vocab_size)
        x = self.embedding(idx)                 # (B, T, C)
        h, final = self.rnn(x, state)           # (B, T, H), state of the last step
        logits = self.head(h)                   # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        return logits, loss, final

    def forward(self, idx: Any, targets: Any = None,
                state: State = None) -> tuple[Tensor, Tensor | None]:
        """The shared interface; the final state is kept in `self.last_state`."""
        logits, loss, self.last_state = self.forward_with_state(idx, targets, state)
        return logits, loss

    @property
    def block_size(self) -> None:
        """No context limit: the state carries everything read so far."""
        return None

    def init_state(self, batch_size: int = 1) -> "RecurrentState":
        """The decoding state: no hidden state yet (zeros), for `batch_size` sequences."""
        return RecurrentState(batch_size)

    def step(self, state: "RecurrentState", ids: Any, mask: Any = None) -> np.ndarray:
        """Feed ids (B, T) through the recurrence from the carried hidden state; the logits
        (B, V) of the next token. Left padding (mask False) leaves a row's state untouched."""
        ids, mask = check_step_ids("RNNLM", ids, mask, state.batch_size, self.vocab_size)
        if ids.shape[1] == 0:
            if state.hidden is None:
                raise ValueError("RNNLM: every sequence needs at least one token to predict from")
            return state.last_logits
        # The graph-free twin of forward_with_state (numpylm.models.rnn_inference).
        if mask is None:
            logits, state.hidden = rnn_inference.forward_logits(self, ids, state.hidden)
            state.last_logits = logits[:, -1]
        else:  # rows of different lengths: each row alone, from its own state
            rows = [self._step_row(state, r, ids[r][mask[r]]) for r in range(len(ids))]
            state.last_logits = np.stack([logits for logits, _ in rows])
            state.hidden = _stack_states([hidden for _, hidden in rows])
        return state.last_logits

    def _step_row(self, state: "RecurrentState", row: int, ids: np.ndarray):
        hidden = None if state.hidden is None else _row_of(state.hidden, row)
        if len(ids) == 0:
            return state.last_logits[row], hidden
        logits, final = rnn_inference.forward_logits(self, ids[None, :], hidden)
        return logits[0, -1], final

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}"


class RecurrentState:
    """A recurrent model's decoding state: its hidden state (None until the first token) and
    the logits it last produced."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.hidden: State = None
        self.last_logits: np.ndarray | None = None

    def __deepcopy__(self, memo: dict) -> "RecurrentState":
        """A copy of the arrays themselves (`decoding.snapshot_state` copies a state once per
        drafted token in speculative decoding; Python's generic deep copy of the Tensors took
        about 90 us of a 1-layer GRU's 130 us step)."""
        new = RecurrentState(self.batch_size)
        if isinstance(self.hidden, tuple):
            new.hidden = tuple(Tensor(s.data.copy()) for s in self.hidden)
        elif self.hidden is not None:
            new.hidden = Tensor(self.hidden.data.copy())
        new.last_logits = None if self.last_logits is None else self.last_logits.copy()
        return new


def _row_of(state: State, row: int) -> State:
    """Sequence `row` of a state, keeping its batch axis: (num_layers, 1, H)."""
    if isinstance(state, tuple):
        return tuple(Tensor(s.data[:, row:row + 1]) for s in state)
    return Tensor(state.data[:, row:row + 1])


def _stack_states(rows: list[State]) -> State:
    """The per-row states (num_layers, 1, H) joined back into one (num_layers, B, H)."""
    if isinstance(rows[0], tuple):
        return tuple(Tensor(np.concatenate([r[k].data for r in rows], axis=1))
                     for k in range(len(rows[0])))
    return Tensor(np.concatenate([r.data for r in rows], axis=1))


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
