"""Choosing the next token from a model's logits, part 3 of the guide: greedy decoding,
temperature, top-k and nucleus (top-p) sampling.

For logits z over the vocabulary, sampling draws token i with probability
softmax(z / temperature)_i (Ackley et al. 1985's Boltzmann distribution):
- temperature -> 0 puts all mass on the largest logit (greedy decoding, `temperature=0`);
  temperature 1 is the model's own distribution; above 1 flattens it.
- top-k keeps only the k most likely tokens (Fan et al. 2018);
- top-p keeps the smallest set of most likely tokens whose probabilities add up to at least
  p (Holtzman et al. 2020, "nucleus sampling").
- min-p keeps the tokens at least min_p times as likely as the most likely one (Nguyen et al.
  2024).
The filters set the logits of dropped tokens to -inf and the rest are renormalised by the
softmax. They are applied after the temperature, top-k, then top-p, then min-p, as in HF
transformers. Before all of them, the logit processors of `numpylm.inference.processors`
(penalties, biases, bans) reshape the scores from what the sequence has produced so far.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from numpylm.inference.processors import apply_processors, check_processor_args, min_p_filter


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a `ValueError` naming any setting outside its range."""
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each next token and when to stop: one value passed through `generate`,
    the CLI and the server, instead of the same five arguments everywhere.

    `temperature=0` is greedy; `top_k`/`top_p` filter the distribution; `seed` (an int, a
    `numpy.random.Generator`, or None for fresh entropy) makes sampling repeatable;
    a sequence ends after the first of `stop_tokens` it produces (the stop token is kept).
    The logit processors (`numpylm.inference.processors`, applied in the order listed there)
    default to values that change nothing: `repetition_penalty` (HF/CTRL), `presence_penalty`
    and `frequency_penalty` (OpenAI), `min_p`, `logit_bias` ({id: bias}, stored as sorted
    pairs), `no_repeat_ngram_size`, `min_new_tokens` (stop tokens banned until then) and
    `bad_words` (id sequences never produced).
    Settings outside their range raise a `ValueError` when the object is made.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: Any = None
    stop_tokens: tuple[int, ...] = field(default=())
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_p: float | None = None
    logit_bias: Any = field(default=())
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    bad_words: tuple[tuple[int, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        stops = tuple(int(t) for t in (self.stop_tokens or ()))
        if any(t < 0 for t in stops):
            raise ValueError(f"stop_tokens must be token ids >= 0, got {list(stops)}")
        object.__setattr__(self, "stop_tokens", stops)
        bias = self.logit_bias or ()
        bias = dict(bias.items() if isinstance(bias, Mapping) else bias)
        bad = tuple(tuple(w) for w in (self.bad_words or ()))
        check_processor_args(self.repetition_penalty, self.presence_penalty,
                             self.frequency_penalty, self.min_p, bias,
                             self.no_repeat_ngram_size, self.min_new_tokens, bad)
        object.__setattr__(self, "logit_bias",
                           tuple(sorted((int(t), float(b)) for t, b in bias.items())))
        object.__setattr__(self, "bad_words", tuple(tuple(int(t) for t in w) for w in bad))

    @property
    def greedy(self) -> bool:
        """Whether tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0

    @property
    def processes(self) -> bool:
        """Whether any logit processor is on (else the logits are sampled as they are)."""
        return bool(self.repetition_penalty != 1.0 or self.presence_penalty
                    or self.frequency_penalty or self.logit_bias or self.no_repeat_ngram_size
                    or self.min_new_tokens or self.bad_words)

    def process(self, logits: np.ndarray, contexts: Sequence[Sequence[int]] | None = None,
                n_new: Sequence[int] | int = 0) -> np.ndarray:
        """The logits (B, V) after the processors, row b seeing `contexts[b]` (prompt and
        output so far) of which the last `n_new[b]` ids were generated."""
        if not self.processes:
            return logits
        if contexts is None:
            raise ValueError("SamplingParams.process: the logit processors need the "
                             "contexts (ids so far) of every row")
        counts = np.broadcast_to(np.asarray(n_new), (len(contexts),))
        return np.stack([apply_processors(row, ctx, int(n), self)
                         for row, ctx, n in zip(np.asarray(logits), contexts, counts)])

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        """The probabilities (B, V) that `sample` draws from, for processed logits (B, V):
        one-hot at the argmax when greedy."""
        logits = np.asarray(logits, dtype=np.float64)
        _check_logits(logits)
        if self.greedy:
            return np.eye(logits.shape[-1])[logits.argmax(axis=-1)]
        return softmax(warp(logits, self.temperature, self.top_k, self.top_p, self.min_p))

    def rng(self) -> np.random.Generator:
        """The generator to draw from (a Generator given as `seed` passes through as it is)."""
        return np.random.default_rng(self.seed)

    def sample(self, logits: np.ndarray, rng: np.random.Generator,
               contexts: Sequence[Sequence[int]] | None = None,
               n_new: Sequence[int] | int = 0) -> np.ndarray:
        """One token id per row of logits (B, V), drawn with these settings (the processors
        see `contexts` and `n_new` as in `process`)."""
        logits = self.process(logits, contexts, n_new)
        return sample_next(logits, self.temperature, self.top_k, self.top_p, rng,
                           min_p=self.min_p)


def as_sampling_params(sampling: SamplingParams | None, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None, seed: Any = None,
                       stop_tokens: Sequence[int] | None = None) -> SamplingParams:
    """`sampling` if given, else one built from the separate arguments (never both)."""
    if sampling is None:
        return SamplingParams(temperature, top_k, top_p, seed, tuple(stop_tokens or ()))
    if (temperature, top_k, top_p, seed, stop_tokens) != (1.0, None, None, None, None):
        raise ValueError("give either sampling=SamplingParams(...) or the separate "
                         "temperature/top_k/top_p/seed/stop_tokens arguments, not both")
    if not isinstance(sampling, SamplingParams):
        raise TypeError(f"sampling must be a SamplingParams, got {type(sampling).__name__}")
    return sampling


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits with -inf everywhere except the k largest of each row (ties with the k-th
    largest are kept, so a row may keep more than k)."""
    logits = np.asarray(logits)
    V = logits.shape[-1]
    if k >= V:
        return logits.copy()
    kth = np.partition(logits, V - k, axis=-1)[..., V - k:V - k + 1]  # k-th largest per row
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Logits with -inf outside each row's nucleus: the most likely tokens, in order, up to
    and including the one at which their total probability first reaches p."""
    logits = np.asarray(logits)
    probs = softmax(logits)
    order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of the tokens ahead
    keep_sorted = before < p  # the first token always stays (nothing is ahead of it)
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, in float64 so that they sum to 1 closely."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_logits(logits: np.ndarray) -> None:
    """Refuse rows a model cannot have meant: NaN anywhere, +inf, or every token at -inf
    (argmax would silently pick token 0)."""
    bad = np.isnan(logits).any(axis=-1) | np.isposinf(logits).any(axis=-1)
    bad |= np.isneginf(logits).all(axis=-1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sample_next: the logits of row {row} are NaN, +inf or all -inf; the "
                         f"model's output is broken (diverged weights?), nothing to sample from")


def warp(logits: np.ndarray, temperature: float, top_k: int | None = None,
         top_p: float | None = None, min_p: float | None = None) -> np.ndarray:
    """Logits (B, V) divided by `temperature` (> 0), then filtered by top-k, top-p, min-p."""
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None,
                rng: np.random.Generator | None = None, *,
                min_p: float | None = None) -> np.ndarray:
    """One token id per row of `logits` (B, V) -> (B,) int64.

    `temperature=0` is greedy (argmax; the lowest id wins a tie) and ignores the filters.
    Draws use `rng` (one uniform number per row), so a seeded generator repeats its choices.
    """
    check_sampling_args(temperature, top_k, top_p)
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] or None, got {min_p}")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"sample_next: logits must have shape (B, V), got {logits.shape}")
    _check_logits(logits)
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    probs = softmax(warp(logits, temperature, top_k, top_p, min_p))
    return draw(probs, rng if rng is not None else np.random.default_rng())


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of probabilities (B, V), by inverse-CDF sampling with one uniform
    number per row."""
    # Inverse-CDF sampling: the first token whose cumulative probability exceeds u.
    u = rng.random(probs.shape[0])[:, None]
    cdf = np.cumsum(probs, axis=-1)
    choice = (cdf <= u * cdf[:, -1:]).sum(axis=-1)
    # Rounding could point past the last token with mass; step back to a token that has it.
    choice = np.minimum(choice, probs.shape[-1] - 1)
    for row in np.flatnonzero(probs[np.arange(len(choice)), choice] == 0):
        choice[row] = np.flatnonzero(probs[row])[-1]
    return choice.astype(np.int64)


def add_sampling_arguments(parser: Any, seed_default: int | None = 0) -> None:
    """The sampling flags of `numpylm generate` (and `chat`, `serve`), in one place: the
    warpers, then the logit processors (`numpylm.inference.processors`)."""
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="0 picks the most likely token")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    parser.add_argument("--min-p", type=float, default=None,
                        help="drop tokens less likely than this fraction of the most likely one")
    parser.add_argument("--seed", type=int, default=seed_default, help="makes sampling repeatable")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 discourages every token already in the text (CTRL/HF)")
    parser.add_argument("--presence-penalty", type=float, default=0.0,
                        help="in [-2, 2]: lowers the logit of every token generated so far")
    parser.add_argument("--frequency-penalty", type=float, default=0.0,
                        help="in [-2, 2]: lowers a token's logit per time it was generated")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0,
                        help="never repeat an n-gram of this size (0: off)")
    parser.add_argument("--min-new-tokens", type=int, default=0,
                        help="the end-of-text token is banned until this many new tokens")
    parser.add_argument("--logit-bias", action="append", default=[], metavar="ID=BIAS",
                        help="add BIAS (in [-100, 100]) to token ID's logit; repeatable")


def _logit_bias(items: Sequence[str]) -> dict[int, float]:
    bias = {}
    for item in items:
        token, sep, value = str(item).partition("=")
        try:
            bias[int(token)] = float(value)
        except ValueError:
            raise ValueError(f"--logit-bias takes ID=BIAS (an integer id and a number), "
                             f"got {item!r}") from None
        if not sep:
            raise ValueError(f"--logit-bias takes ID=BIAS, got {item!r}")
    return bias


def sampling_from_args(args: Any, stop_tokens: Sequence[int] = ()) -> SamplingParams:
    """A `SamplingParams` from the flags of `add_sampling_arguments` (a parser made before the
    processor flags existed gets their defaults)."""
    flag = lambda name, default: getattr(args, name, default)  # noqa: E731
    return SamplingParams(args.temperature, args.top_k, args.top_p, args.seed, tuple(stop_tokens),
                          repetition_penalty=flag("repetition_penalty", 1.0),
                          presence_penalty=flag("presence_penalty", 0.0),
                          frequency_penalty=flag("frequency_penalty", 0.0),
                          min_p=flag("min_p", None),
                          logit_bias=_logit_bias(flag("logit_bias", [])),
                          no_repeat_ngram_size=flag("no_repeat_ngram_size", 0),
                          min_new_tokens=flag("min_new_tokens", 0))
