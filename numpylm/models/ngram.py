"""Count-based n-gram language models: P(w | h) estimated from how often w followed h.

The first language model of the guide. An order-n model reads the previous n-1 tokens h and
predicts the next token w from counts c(h w) (see `ngram_counts.py`). Raw ratios c(h w)/c(h)
give zero probability to anything unseen, so every practical model *smooths*:

- "mle":   P(w|h) = c(h w) / c(h). If the context h was never seen, c(h) = 0 and we back off
           to the shorter context h' (h without its first token), down to the unigram
           c(w) / N. A seen context with an unseen w still gets probability 0.
- "add_k": P(w|h) = (c(h w) + k) / (c(h) + k V)   (Lidstone; k = 1 is Laplace). An unseen
           context gets the uniform distribution 1/V; there is no backoff.
- "kneser_ney": interpolated Kneser-Ney (Kneser & Ney 1995; Chen & Goodman 1998), one D per order:
           P(w|h) = max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) * P(w|h')
           At the highest order c is the raw count; at every lower order it is the
           continuation count N1+(. h w) = |{u : c(u h w) > 0}|, because a lower order is only
           consulted to say how likely w is in a *new* context. D defaults to the estimate
           D = n1 / (n1 + 2 n2) from that order's counts of counts.
           The unigram level is discounted too and interpolated with the uniform distribution
           over the vocabulary (Chen & Goodman's "0-gram"), so every token has P > 0.
           `unigram_base="none"` instead stops at the plain continuation unigram
           N1+(. w) / N1+(. .) (as NLTK does): words never seen then get probability 0.
- "modified_kneser_ney": the same with three discounts per order, D1, D2, D3+ for counts
           1, 2 and >= 3 (Chen & Goodman 1998), and the backoff weight
           (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h). Estimated from Y = n1/(n1 + 2 n2):
           D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.
- "stupid_backoff": S(w|h) = c(h w)/c(h) if c(h w) > 0 else alpha S(w|h')  (Brants et al.
           2007). These are *scores, not probabilities*: they do not sum to 1, so
           `perplexity` refuses them and `distribution` returns unnormalised scores.

For both Kneser-Ney variants, a context never seen puts all its weight on the lower order
(alpha = 0, gamma = 1). How the discounts are given or estimated, and the fallback when
counts of counts are too sparse, is in `ngram_discounts.py`; `discounts_` holds what was used.

Sequences are padded with n-1 BOS ids before and one EOS id after. By default a single extra
id, `vocab_size`, plays both roles (as '.' in makemore's names); `bos_id`/`eos_id` choose
ids of the vocabulary instead. BOS is only ever context: when it differs from EOS it is left
out of the outcome space (its probability is exactly 0 and V counts the other ids).

Two scoring paths: `prob` follows the formulas one token at a time, looking counts up
directly; `token_logprobs` (behind `logprob`, `perplexity`, `distribution`) precomputes
per-order tables alpha(h w) and gamma(h) at fit time and scores all positions at once with
binary searches over sorted int64 keys. The tests show the two agree.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from numpylm.autograd.tensor import Tensor
from numpylm.io.errors import FileFormatError
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.models.decoding import WindowState
from numpylm.models.ngram_discounts import estimate_discounts, parse_discounts
from numpylm.models.ngram_counts import (
    OrderTable,
    check_count_tables,
    check_packable,
    check_sequences,
    count_ngrams,
    lookup,
    pack,
    padded_windows,
)

MAX_VOCAB = 1 << 24  # 16.7M ids, far above any tokenizer; distribution() is 128 MB at this size

# The parameters each smoothing accepts, with their defaults.
SMOOTHINGS: dict[str, dict[str, object]] = {
    "mle": {},
    "add_k": {"k": 1.0},
    "kneser_ney": {"discount": None, "unigram_base": "uniform"},
    "modified_kneser_ney": {"discounts": None, "unigram_base": "uniform"},
    "stupid_backoff": {"alpha": 0.4},
}


def _check_sizes(order: object, vocab_size: object, smoothing: object) -> None:
    """The constructor's order, vocabulary size and smoothing, each in its range."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
    if vocab_size > MAX_VOCAB:  # distribution() holds one float per id
        raise ValueError(f"vocab_size {vocab_size} is implausibly large (at most {MAX_VOCAB})")
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"unknown smoothing {smoothing!r}; expected one of {sorted(SMOOTHINGS)}")


def _boundary_ids(vocab_size: int, bos_id: int | None,
                  eos_id: int | None) -> tuple[int, int, int]:
    """(vocabulary size with the boundary id, BOS id, EOS id): by default one extra id,
    `vocab_size`, marks both ends; given ids must lie inside the vocabulary."""
    if bos_id is None and eos_id is None:
        return vocab_size + 1, vocab_size, vocab_size
    bos_id = eos_id if bos_id is None else bos_id
    eos_id = bos_id if eos_id is None else eos_id
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not isinstance(value, (int, np.integer)) or not 0 <= value < vocab_size:
            raise ValueError(f"{name} must be an id in [0, {vocab_size}), got {value!r}")
    return vocab_size, int(bos_id), int(eos_id)


class NGramLM:
    """An order-n language model over integer token ids 0 .. vocab_size-1.

    >>> lm = NGramLM(2, vocab_size=3, smoothing="add_k", k=1).fit([[0, 1], [0, 2]])
    >>> lm.vocab_size           # 3 ids + one reserved boundary id (3) for BOS/EOS
    4
    >>> round(lm.prob(1, context=[0]), 4)   # (c(0 1) + 1) / (c(0) + 1 * 4) = 2 / 6
    0.3333
    """

    def __init__(
        self,
        order: int,
        vocab_size: int,
        smoothing: str = "kneser_ney",
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        **params: object,
    ) -> None:
        _check_sizes(order, vocab_size, smoothing)
        self.order = int(order)
        self.smoothing = smoothing
        # The constructor's arguments, so NGramLM(**lm.config) builds the same (unfitted) model.
        self.config = {"order": self.order, "vocab_size": int(vocab_size), "smoothing": smoothing,
                       "bos_id": bos_id, "eos_id": eos_id, **params}

        vocab_size, bos_id, eos_id = _boundary_ids(int(vocab_size), bos_id, eos_id)
        self.vocab_size = int(vocab_size)
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)
        # Outcomes are every id except a BOS that is not also EOS (it is never predicted).
        self.n_outcomes = self.vocab_size - (self.bos_id != self.eos_id)
        check_packable(self.vocab_size, self.order)

        unknown = set(params) - set(SMOOTHINGS[smoothing])
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for smoothing {smoothing!r}; "
                f"it takes {sorted(SMOOTHINGS[smoothing]) or 'none'}"
            )
        self.params = {**SMOOTHINGS[smoothing], **params}
        self._check_params()
        self.tables_: list[OrderTable] | None = None

    # ------------------------------------------------------------------------------------------
    # Parameters.

    def _check_params(self) -> None:
        p = self.params
        if self.smoothing == "add_k":
            k = p["k"]
            if not isinstance(k, (int, float, np.number)) or not k > 0 or not math.isfinite(k):
                raise ValueError(f"add_k needs k > 0, got k={k!r}")
        elif self.smoothing == "stupid_backoff":
            a = p["alpha"]
            if not isinstance(a, (int, float, np.number)) or not 0 < a <= 1:
                raise ValueError(f"stupid_backoff needs 0 < alpha <= 1, got alpha={a!r}")
        elif self.smoothing in ("kneser_ney", "modified_kneser_ney"):
            if p["unigram_base"] not in ("uniform", "none"):
                raise ValueError(f"unigram_base must be 'uniform' or 'none', got {p['unigram_base']!r}")
            key = "discount" if self.smoothing == "kneser_ney" else "discounts"
            self._given_discounts = parse_discounts(self.smoothing, p[key], self.order)

    # ------------------------------------------------------------------------------------------
    # Fitting.

    def fit(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> "NGramLM":
        """Count every n-gram of the padded sequences and precompute the scoring tables."""
        seqs = check_sequences(sequences, self.vocab_size, self.bos_id)
        if sum(len(s) for s in seqs) == 0:
            raise ValueError("empty corpus: fit needs at least one sequence with at least one token")
        raw, cont = count_ngrams(padded_windows(seqs, self.order, self.bos_id, self.eos_id), self.vocab_size)
        kneser_ney = self.smoothing in ("kneser_ney", "modified_kneser_ney")
        self.tables_ = []
        for m in range(1, self.order + 1):
            # Kneser-Ney's lower orders count distinct left neighbours, not occurrences.
            keys, counts = cont[m - 1] if kneser_ney and m < self.order else raw[m - 1]
            self.tables_.append(OrderTable.build(m, keys, counts, self.vocab_size))
        self.n_tokens_ = int(raw[0][1].sum())  # predicted positions, EOS included
        if kneser_ney:
            if self._given_discounts is not None:
                self.discounts_, self.discount_fallback_ = self._given_discounts, []
            else:
                self.discounts_, self.discount_fallback_ = estimate_discounts(self.smoothing, self.tables_)
        self._precompute()
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted count tables as named arrays (what a checkpoint's safetensors holds):
        `order{m}.keys` (packed m-grams), `order{m}.counts` (the count used at order m),
        `n_tokens` and, for Kneser-Ney, `discounts`."""
        self._check_fitted()
        # key_base: the base the keys are packed in; a file with another vocab_size is refused.
        state = {"n_tokens": np.array(self.n_tokens_, dtype=np.int64),
                 "key_base": np.array(self.vocab_size, dtype=np.int64)}
        for m, table in enumerate(self.tables_, 1):
            state[f"order{m}.keys"] = np.asarray(table.keys, dtype=np.int64)
            state[f"order{m}.counts"] = np.asarray(table.counts, dtype=np.int64)
        if self.smoothing in ("kneser_ney", "modified_kneser_ney"):
            state["discounts"] = np.asarray(self.discounts_, dtype=np.float64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> "NGramLM":
        """Become the fitted model whose `state_dict()` is `state`, without recounting."""
        kneser_ney = self.smoothing in ("kneser_ney", "modified_kneser_ney")
        needed = ["n_tokens"] + [f"order{m}.{part}" for m in range(1, self.order + 1)
                                 for part in ("keys", "counts")] + (["discounts"] if kneser_ney else [])
        missing = [name for name in needed if name not in state]
        if missing:
            raise ValueError(f"the n-gram state lacks {', '.join(missing)}")
        base = state.get("key_base")  # absent from checkpoints written before it was stored
        if base is not None and (np.shape(base) != () or int(base) != self.vocab_size):
            raise FileFormatError(None, f"the keys were packed with vocab_size {base!r} but the "
                                        f"model has {self.vocab_size}", field="key_base")
        check_count_tables(state, self.order, self.vocab_size, continuation=kneser_ney)
        self.tables_ = [OrderTable.build(m, state[f"order{m}.keys"].astype(np.int64),
                                         state[f"order{m}.counts"].astype(np.int64),
                                         self.vocab_size) for m in range(1, self.order + 1)]
        self.n_tokens_ = int(state["n_tokens"])
        if kneser_ney:
            discounts = state["discounts"]
            if (np.shape(discounts) != (self.order, 3) or discounts.dtype.kind != "f"
                    or not np.all((discounts > 0) & (discounts < [1, 2, 3]))):
                raise FileFormatError(None, f"must be an ({self.order}, 3) float array with "
                                            f"0 < D_c < c", field="discounts")
            self.discounts_ = np.asarray(discounts, dtype=np.float64)
            self.discount_fallback_ = []
        self._precompute()
        return self

    def _precompute(self) -> None:
        """Per order: alpha for each seen m-gram, gamma for each seen context, so that
        P_m(w|h) = alpha(h w) + gamma(h) P_{m-1}(w|h')  (alpha = 0 for an unseen h w,
        gamma = 1 for an unseen h); stupid backoff instead uses alpha or backs off."""
        V_out = self.n_outcomes
        self._base = np.zeros(self.vocab_size)
        uniform = self.smoothing == "add_k" or self.params.get("unigram_base") == "uniform"
        if uniform:
            self._base[:] = 1.0 / V_out
            if self.bos_id != self.eos_id:
                self._base[self.bos_id] = 0.0  # BOS is never predicted
        self._alpha, self._gamma = [], []
        for m, t in enumerate(self.tables_, 1):
            counts = t.counts.astype(float)
            total_of_gram = t.ctx_total[t.gram_ctx].astype(float)
            if self.smoothing == "add_k":
                # (c + k) / (T + kV) = c / (T + kV) + kV / (T + kV) * (1 / V)
                kV = self.params["k"] * V_out
                alpha = counts / (total_of_gram + kV)
                gamma = kV / (t.ctx_total + kV)
            elif self.smoothing in ("mle", "stupid_backoff") or (m == 1 and not uniform):
                alpha = counts / total_of_gram
                gamma = np.zeros(len(t.ctx_keys))
            else:
                D = self.discounts_[m - 1]
                d = D[np.minimum(t.counts, 3) - 1]
                alpha = (counts - d) / total_of_gram
                n3plus = t.ctx_types - t.ctx_n1 - t.ctx_n2
                gamma = (D[0] * t.ctx_n1 + D[1] * t.ctx_n2 + D[2] * n3plus) / t.ctx_total
            self._alpha.append(alpha)
            self._gamma.append(gamma)

    def _check_fitted(self) -> None:
        if self.tables_ is None:
            raise ValueError("this NGramLM is not fitted yet; call fit(sequences) first")

    # ------------------------------------------------------------------------------------------
    # The readable path: one token, the formulas of the module docstring.

    def _context(self, context: Sequence[int] | np.ndarray) -> tuple[int, ...]:
        """The last n-1 ids of `context`, padded on the left with BOS."""
        ids = np.asarray(context, dtype=np.int64).reshape(-1) if len(context) else np.zeros(0, np.int64)
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"context has token id {int(bad[0])} outside the vocabulary [0, {self.vocab_size})")
        width = self.order - 1
        tail = [int(t) for t in ids[max(len(ids) - width, 0) :]] if width else []
        return (self.bos_id,) * (width - len(tail)) + tuple(tail)

    def _check_token(self, token: int) -> int:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise TypeError(f"token must be an integer id, got {type(token).__name__}")
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token id {token} is outside the vocabulary [0, {self.vocab_size})")
        return int(token)

    def _stats(self, m: int, h: tuple[int, ...], w: int) -> tuple[int, int, int, int, int]:
        """(c(h w), c(h), N1(h .), N2(h .), N1+(h .)) at order m, by direct lookup."""
        t = self.tables_[m - 1]
        h_key = int(pack(np.array([h], dtype=np.int64).reshape(1, -1), self.vocab_size)[0]) if h else 0
        ci = int(np.searchsorted(t.ctx_keys, h_key))
        if ci == len(t.ctx_keys) or t.ctx_keys[ci] != h_key:
            return 0, 0, 0, 0, 0
        gi = int(np.searchsorted(t.keys, h_key * self.vocab_size + w))
        c_hw = int(t.counts[gi]) if gi < len(t.keys) and t.keys[gi] == h_key * self.vocab_size + w else 0
        return c_hw, int(t.ctx_total[ci]), int(t.ctx_n1[ci]), int(t.ctx_n2[ci]), int(t.ctx_types[ci])

    def prob(self, token: int, context: Sequence[int] | np.ndarray = ()) -> float:
        """P(token | context) (a score for stupid backoff), computed one formula at a time.

        `context` is the tokens before `token` in the same sequence; fewer than n-1 of them
        are padded with BOS, as at the start of a sequence.
        """
        self._check_fitted()
        w, h = self._check_token(token), self._context(context)
        n, s = self.order, self.smoothing
        if w == self.bos_id and self.bos_id != self.eos_id:
            return 0.0  # BOS is never predicted
        suffix = lambda m: h[len(h) - (m - 1) :]  # noqa: E731  (the last m-1 context ids)
        if s == "add_k":
            c_hw, c_h, *_ = self._stats(n, h, w)
            k = self.params["k"]
            return (c_hw + k) / (c_h + k * self.n_outcomes)
        if s == "mle":
            for m in range(n, 0, -1):  # the longest context that was seen
                c_hw, c_h, *_ = self._stats(m, suffix(m), w)
                if c_h > 0:
                    return c_hw / c_h
            return 0.0
        if s == "stupid_backoff":
            scale = 1.0
            for m in range(n, 0, -1):
                c_hw, c_h, *_ = self._stats(m, suffix(m), w)
                if c_hw > 0:
                    return scale * c_hw / c_h
                scale *= self.params["alpha"]
            return 0.0
        # Kneser-Ney, built up from the uniform base through the orders 1 .. n.
        p = 1.0 / self.n_outcomes
        for m in range(1, n + 1):
            c_hw, c_h, n1, n2, types = self._stats(m, suffix(m), w)
            if m == 1 and self.params["unigram_base"] == "none":
                p = c_hw / c_h
                continue
            if c_h == 0:
                continue  # unseen context: all weight on the lower order
            D1, D2, D3 = self.discounts_[m - 1]
            d = 0.0 if c_hw == 0 else (D1, D2, D3)[min(c_hw, 3) - 1]
            gamma = (D1 * n1 + D2 * n2 + D3 * (types - n1 - n2)) / c_h
            p = (c_hw - d) / c_h + gamma * p
        return p

    # ------------------------------------------------------------------------------------------
    # The vectorised path: every position at once.

    def _score_windows(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """P(tokens[i] | contexts[i]) for (N, n-1) contexts and (N,) tokens, vectorised."""
        V, n = self.vocab_size, self.order
        p = self._base[tokens]
        ctx = np.zeros(len(tokens), dtype=np.int64)  # packed context of the current order
        orders = [n] if self.smoothing == "add_k" else range(1, n + 1)
        for m in range(1, n + 1):
            if m > 1:  # one more context id, as the most significant digit
                ctx = contexts[:, n - m] * V ** (m - 2) + ctx
            if m not in orders:
                continue
            t = self.tables_[m - 1]
            ci, ctx_seen = lookup(t.ctx_keys, ctx)
            gi, gram_seen = lookup(t.keys, ctx * V + tokens)
            alpha = np.where(gram_seen, self._alpha[m - 1][gi], 0.0)
            if self.smoothing == "stupid_backoff":
                p = np.where(gram_seen, alpha, self.params["alpha"] * p)
            else:
                p = alpha + np.where(ctx_seen, self._gamma[m - 1][ci], 1.0) * p
        return p

    def distribution(self, context: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """P(w | context) for every id w, shape (vocab_size,); scores for stupid backoff."""
        self._check_fitted()
        h = np.array(self._context(context), dtype=np.int64)
        contexts = np.broadcast_to(h, (self.vocab_size, len(h)))
        return self._score_windows(contexts, np.arange(self.vocab_size, dtype=np.int64))

    def token_logprobs(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Natural-log probability of every predicted position (each token and each EOS) of
        the padded sequences, concatenated in order: shape (sum(len(s) + 1),)."""
        self._check_fitted()
        seqs = check_sequences(sequences, self.vocab_size, self.bos_id)
        windows = padded_windows(seqs, self.order, self.bos_id, self.eos_id)
        with np.errstate(divide="ignore"):  # MLE gives log 0 = -inf for unseen events
            return np.log(self._score_windows(windows[:, :-1], windows[:, -1]))

    def logprob(self, sequence: Sequence[int] | np.ndarray) -> float:
        """log P(sequence, EOS | BOS...) in nats (a log score for stupid backoff)."""
        return float(self.token_logprobs([sequence]).sum())

    def mean_nll(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> float:
        """Mean negative log-likelihood per predicted token (EOS included), in nats."""
        if self.smoothing == "stupid_backoff":
            raise ValueError("stupid_backoff gives scores, not probabilities: NLL and perplexity are undefined")
        logp = self.token_logprobs(sequences)
        if logp.size == 0:
            raise ValueError("no sequences to score")
        return float(-logp.mean())

    def perplexity(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> float:
        """exp(mean NLL) over every predicted token, EOS included."""
        return math.exp(self.mean_nll(sequences))

    def bits_per_token(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> float:
        """Mean NLL in bits: log2(perplexity)."""
        return self.mean_nll(sequences) / math.log(2)

    # ------------------------------------------------------------------------------------------
    # The model contract of numpylm.models.base: forward, and decoding through a window.

    block_size = None  # any length of context; only the last n-1 ids are read

    def log_distributions(self, contexts: np.ndarray) -> np.ndarray:
        """log P(. | h) for contexts (N, n-1) of ids (BOS-padded): (N, vocab_size)."""
        self._check_fitted()
        N, V = len(contexts), self.vocab_size
        tokens = np.tile(np.arange(V, dtype=np.int64), N)
        with np.errstate(divide="ignore"):  # unseen events under MLE: log 0 = -inf
            return np.log(self._score_windows(np.repeat(contexts, V, axis=0), tokens)).reshape(N, V)

    def forward(self, idx, targets=None):
        """idx (B, T) -> (logits (B, T, V) = log P(next | BOS-padded ids up to t), mean NLL
        of the targets that are not -1, or None), as Tensors without a graph."""
        idx, targets = check_ids("NGramLM", idx, targets, self.vocab_size)
        B, T = idx.shape
        padded = np.concatenate([np.full((B, self.order - 1), self.bos_id, np.int64), idx], 1)
        contexts = np.lib.stride_tricks.sliding_window_view(padded, self.order - 1, axis=1)
        logits = self.log_distributions(contexts[:, 1:].reshape(B * T, -1)).reshape(B, T, -1)
        if targets is None:
            return Tensor(logits), None
        keep = targets != IGNORE_INDEX
        picked = np.take_along_axis(logits, np.where(keep, targets, 0)[..., None], -1)[..., 0]
        return Tensor(logits), Tensor(np.array(-picked[keep].mean()))

    __call__ = forward

    def init_state(self, batch_size: int = 1) -> WindowState:
        """The decoding state: each sequence's last n-1 ids, BOS before its start."""
        return WindowState(batch_size, self.order - 1, fill=self.bos_id)

    def step(self, state: WindowState, ids, mask=None) -> np.ndarray:
        """Feed ids (B, T) (T may be 0: predict from BOS); log P(next | window), (B, V)."""
        ids, mask = check_step_ids("NGramLM", ids, mask, state.batch_size, self.vocab_size)
        state.push(ids, mask)
        return self.log_distributions(state.window)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"NGramLM(order={self.order}, vocab_size={self.vocab_size}, smoothing={self.smoothing!r}{extra})"
