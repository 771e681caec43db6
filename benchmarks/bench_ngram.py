"""Benchmark: n-gram language models against published figures and against NLTK.

(a) names.txt (../shared/data/names.txt, skipped when absent): character bigrams with '.' as
    start/end token, mean NLL over every bigram of the file, beside the published 2.4546
    (add-one) and 2.4540 (no smoothing).
(b) The embedded corpus (Python's reference manual), word level: a trigram interpolated
    Kneser-Ney model is fitted on all but the last lines and scores 2,000 held-out tokens;
    NLTK's KneserNeyInterpolated is fitted on the same n-grams and scores the same trigrams
    when nltk is installed. Prints perplexities, times and speed ratios, and explains where
    the two formulas differ.
(c) names.txt again: the Bengio-style MLPLM (context 3, embedding 10, hidden 200), trained
    makemore-style (names shuffled with a fixed seed, 80/10/10 split, one example per
    character, '.' start/end and padding) with SGD; prints the dev loss beside the published
    "about 2.17" (target <= 2.20), and the same run in PyTorch when installed (same initial
    weights, same batches).

Run: python benchmarks/bench_ngram.py [--part names|kn|mlp|all]
"""
from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

import numpy as np

from numpylm.models import NGramLM

REPO = Path(__file__).resolve().parent.parent
NAMES = REPO.parent / "shared" / "data" / "names.txt"
HELD_OUT_TOKENS = 2000


def timed(fn, repeat: int = 1):
    """(result of the last call, best wall time over `repeat` calls)."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


# ----------------------------------------------------------------------------------------------
# (a) names.txt, character bigrams.


def load_names() -> tuple[list[str], dict[str, int]] | None:
    if not NAMES.is_file():
        return None
    words = NAMES.read_text(encoding="utf-8").split()
    chars = sorted(set("".join(words)))
    stoi = {c: i + 1 for i, c in enumerate(chars)}
    stoi["."] = 0  # makemore's convention: '.' is id 0 and marks both ends
    return words, stoi


def bench_names() -> None:
    print("== (a) names.txt: character bigram counts, '.' as start/end token")
    loaded = load_names()
    if loaded is None:
        print(f"   skipped: {NAMES} not found\n")
        return
    words, stoi = loaded
    seqs = [np.array([stoi[c] for c in w]) for w in words]
    n_bigrams = sum(len(s) + 1 for s in seqs)
    print(f"   {len(words):,} names, {n_bigrams:,} bigrams (published: 228,146)")
    for label, smoothing, params, published in (
        ("add-one", "add_k", {"k": 1}, 2.4546),
        ("no smoothing", "mle", {}, 2.4540),
    ):
        lm = NGramLM(2, len(stoi), smoothing, bos_id=0, eos_id=0, **params)
        _, t_fit = timed(lambda: lm.fit(seqs), repeat=3)
        nll, t_score = timed(lambda: lm.mean_nll(seqs), repeat=3)
        print(
            f"   {label:13s} mean NLL  ours {nll:.4f}   published {published:.4f}   "
            f"(fit {t_fit * 1e3:.0f} ms, score {t_score * 1e3:.0f} ms)"
        )
    print()


# ----------------------------------------------------------------------------------------------
# (b) Embedded corpus, word-level trigram Kneser-Ney, against NLTK.


def corpus_text() -> str:
    try:
        from numpylm.corpus import embedded_corpus
    except ImportError:
        import pydoc_data.topics

        return "".join(pydoc_data.topics.topics.values())
    return embedded_corpus()


def split_lines(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """Word-tokenised lines; the last lines holding exactly HELD_OUT_TOKENS words are held out."""
    lines = [re.findall(r"\w+|[^\w\s]", line) for line in text.splitlines()]
    lines = [line for line in lines if line]
    held, n = [], 0
    while n < HELD_OUT_TOKENS:
        line = lines.pop()
        take = min(len(line), HELD_OUT_TOKENS - n)
        held.insert(0, line[len(line) - take :])  # trim the first held-out line to its tail
        n += take
    return lines, held


def nltk_training_text(train_ids: list[np.ndarray], itos: list[str], order: int):
    """The same n-grams our model counts: per predicted position, its n-gram and every suffix."""
    for seq in train_ids:
        padded = ["<s>"] * (order - 1) + [itos[t] for t in seq] + ["</s>"]
        grams = []
        for t in range(order - 1, len(padded)):
            grams.extend(tuple(padded[t - m + 1 : t + 1]) for m in range(order, 0, -1))
        yield grams


EXPLANATION = """\
   How NLTK's KneserNeyInterpolated differs from the textbook interpolated KN (read from
   nltk/lm/models.py and nltk/lm/smoothing.py of the installed package):
   1. Discount: NLTK uses one fixed discount for every order (argument `discount`, default 0.1).
      Textbook KN (Chen & Goodman 1998) estimates one per order, D_m = n1 / (n1 + 2 n2) from
      that order's counts of counts; here D = {discounts}.
   2. Highest vs lower orders: both use raw counts c(h w)/c(h) at the highest order and
      continuation counts N1+(. h w)/N1+(. h .) below it. But NLTK's backoff weight at a lower
      order counts the distinct followers of h among *raw* m-gram counts while dividing by the
      *continuation* total. The two agree only if every lower-order n-gram also ends some
      higher-order n-gram. That holds for the n-grams fed here (each position's n-gram and its
      suffixes), but not for NLTK's own padded_everygram_pipeline, which pads both ends with n-1
      markers and counts every everygram: e.g. the bigram (<s>, <s>) ends no trigram, and the
      distribution after (<s>, <s>) then sums to {nltk_sum:.4f}, not 1 (on a four-sentence toy corpus).
   3. Unigram base: NLTK stops at the undiscounted continuation unigram N1+(. w) / N1+(. .).
      A word never seen in training (every held-out word outside the training vocabulary
      becomes <UNK>) gets probability 0, so NLTK's perplexity is infinite whenever the held-out
      text has one. Textbook KN discounts the unigram level too and interpolates it with the
      uniform distribution 1/V, so every token has P > 0.
   4. Unseen contexts: identical; both put all the weight on the lower order (alpha 0, gamma 1).
   5. Speed: NLTK recomputes each continuation count by scanning every context of the next
      order up (a Python loop per lookup); ours precomputes per-order tables at fit time and
      scores all positions at once with binary searches over sorted int64 keys.
   With discount=0.1 and unigram_base="none" our model reproduces NLTK's numbers (compared
   per trigram above); the default stays the textbook variant."""


def nltk_everygram_sum() -> float:
    """Sum of NLTK's KN distribution after (<s>, <s>) on a toy corpus, with NLTK's own pipeline."""
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    train, vocab = padded_everygram_pipeline(3, [["a", "b"], ["a"], ["b", "b", "c"], ["c", "a"]])
    lm = KneserNeyInterpolated(3)
    lm.fit(train, vocab)
    return sum(lm.score(w, ("<s>", "<s>")) for w in lm.vocab)


def bench_kneser_ney() -> None:
    print("== (b) embedded corpus, word-level trigram interpolated Kneser-Ney")
    train_words, held_words = split_lines(corpus_text())
    itos = sorted({w for line in train_words for w in line}) + ["<UNK>"]
    stoi = {w: i for i, w in enumerate(itos)}
    unk = stoi["<UNK>"]
    train = [np.array([stoi[w] for w in line]) for line in train_words]
    held = [np.array([stoi.get(w, unk) for w in line]) for line in held_words]
    n_positions = sum(len(s) + 1 for s in held)
    n_oov = sum(int((s == unk).sum()) for s in held)
    print(
        f"   train {sum(map(len, train)):,} tokens in {len(train):,} lines, vocabulary {len(itos):,} "
        f"(with <UNK>); held out {HELD_OUT_TOKENS:,} tokens in {len(held)} lines "
        f"= {n_positions:,} trigrams (EOS included), {n_oov} of them <UNK>"
    )

    ours = NGramLM(3, len(itos), "kneser_ney")
    _, t_fit = timed(lambda: ours.fit(train), repeat=3)
    logp, t_score = timed(lambda: ours.token_logprobs(held), repeat=5)
    known = np.concatenate([np.append(s, -1) != unk for s in held])  # targets that are not <UNK>
    print(
        f"   ours, textbook KN:     perplexity {math.exp(-logp.mean()):8.2f} "
        f"({math.exp(-logp[known].mean()):.2f} on the {known.sum()} non-<UNK> targets)   "
        f"fit {t_fit * 1e3:.0f} ms, score {t_score * 1e3:.1f} ms"
    )
    print(f"      discounts per order (unigram, bigram, trigram): {np.round(ours.discounts_[:, 0], 3).tolist()}")
    nltk_like = NGramLM(3, len(itos), "kneser_ney", discount=0.1, unigram_base="none").fit(train)
    logp_like = nltk_like.token_logprobs(held)
    print(
        f"   ours, NLTK's variant:  perplexity {math.exp(-logp_like.mean()):8.2f} "
        f"({math.exp(-logp_like[known].mean()):.2f} on non-<UNK> targets)   "
        "[discount=0.1, unigram_base='none']"
    )

    try:
        import nltk  # noqa: F401
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.vocabulary import Vocabulary
    except ImportError:
        print("   NLTK: not installed, skipped\n")
        return
    lm = KneserNeyInterpolated(3)
    vocab = Vocabulary(itos[:-1] + ["<s>", "</s>"], unk_cutoff=1)
    _, t_fit_nltk = timed(lambda: lm.fit(nltk_training_text(train, itos, 3), vocab))
    held_trigrams = []
    for seq in held:
        padded = ["<s>", "<s>"] + [itos[t] for t in seq] + ["</s>"]
        held_trigrams += [tuple(padded[t - 2 : t + 1]) for t in range(2, len(padded))]
    t0 = time.perf_counter()
    nltk_log2 = np.array([lm.logscore(g[-1], g[:-1]) for g in held_trigrams])
    t_score_nltk = time.perf_counter() - t0
    nltk_ln = nltk_log2 * math.log(2)
    print(
        f"   NLTK {nltk.__version__} KneserNeyInterpolated(3): perplexity {math.exp(-nltk_ln.mean()):8.2f} "
        f"({math.exp(-nltk_ln[known].mean()):.2f} on non-<UNK> targets)   "
        f"fit {t_fit_nltk * 1e3:.0f} ms, score {t_score_nltk * 1e3:.0f} ms"
    )
    finite = np.isfinite(nltk_ln)
    same = np.array_equal(finite, np.isfinite(logp_like))
    diff = np.abs(nltk_ln[finite] - logp_like[finite]).max()
    print(
        f"   ours (NLTK's variant) vs NLTK, per trigram: max |log p difference| = {diff:.2e}; "
        f"zero probabilities at the same positions: {same}"
    )
    print(
        f"   speed: scoring {t_score_nltk / t_score:,.0f}x faster than NLTK (target >= 100x), "
        f"fitting {t_fit_nltk / t_fit:,.1f}x faster (target > 1x)"
    )
    print(EXPLANATION.format(discounts=np.round(ours.discounts_[:, 0], 3).tolist(), nltk_sum=nltk_everygram_sum()))
    print()


# ----------------------------------------------------------------------------------------------
# (c) names.txt, the MLP of Bengio et al. (2003).

MLP_STEPS, MLP_BATCH, MLP_LR = 30_000, 64, (0.1, 0.01)  # lr drops to 0.01 halfway


def names_windows(words: list[str], stoi: dict[str, int], context: int) -> tuple[np.ndarray, np.ndarray]:
    """One example per character (and the final '.'): the `context` previous ids, most recent
    first (the order MLPLM.window_logits expects), starting from '...'."""
    X, Y = [], []
    for w in words:
        window = [0] * context
        for ch in w + ".":
            X.append(window[::-1])
            Y.append(stoi[ch])
            window = window[1:] + [stoi[ch]]
    return np.array(X), np.array(Y)


def bench_mlp() -> None:
    import random

    import numpylm.functional as F
    from numpylm.autograd import no_grad
    from numpylm.models import MLPLM
    from numpylm.optim import SGD

    print("== (c) names.txt: MLPLM (context 3, embedding 10, hidden 200), makemore-style split")
    loaded = load_names()
    if loaded is None:
        print(f"   skipped: {NAMES} not found\n")
        return
    words, stoi = loaded
    random.Random(42).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    Xtr, Ytr = names_windows(words[:n1], stoi, 3)
    Xdev, Ydev = names_windows(words[n1:n2], stoi, 3)
    print(f"   {len(Xtr):,} training and {len(Xdev):,} dev examples; SGD, {MLP_STEPS:,} steps of "
          f"batch {MLP_BATCH}, lr {MLP_LR[0]} then {MLP_LR[1]}")
    model = MLPLM(len(stoi), context=3, n_embd=10, n_hidden=200, pad_id=0, rng=0)
    init = {k: v.copy() for k, v in model.state_dict().items()}
    batches = np.random.default_rng(0).integers(0, len(Xtr), size=(MLP_STEPS, MLP_BATCH))
    opt = SGD(model.parameters(), lr=MLP_LR[0])
    t0 = time.perf_counter()
    for step, ix in enumerate(batches):
        if step == MLP_STEPS // 2:
            opt.param_groups[0]["lr"] = MLP_LR[1]
        loss = F.cross_entropy(model.window_logits(Xtr[ix]), Ytr[ix])
        model.zero_grad()
        loss.backward()
        opt.step()
    t_ours = time.perf_counter() - t0
    with no_grad():
        dev = F.cross_entropy(model.window_logits(Xdev), Ydev).item()
    print(f"   ours:    dev loss {dev:.4f}   (published about 2.17, target <= 2.20)   train {t_ours:.1f} s")

    try:
        import torch
    except ImportError:
        print("   PyTorch: not installed, skipped\n")
        return
    # One thread: tiny matrices gain nothing from more, and oversubscribing a loaded machine
    # makes PyTorch many times slower.
    torch.set_num_threads(1)
    wte = torch.tensor(init["wte.weight"], requires_grad=True)
    w1, b1 = (torch.tensor(init[k], requires_grad=True) for k in ("mlp.0.weight", "mlp.0.bias"))
    w2, b2 = (torch.tensor(init[k], requires_grad=True) for k in ("mlp.2.weight", "mlp.2.bias"))
    params = [wte, w1, b1, w2, b2]
    topt = torch.optim.SGD(params, lr=MLP_LR[0])
    Xt, Yt = torch.from_numpy(Xtr), torch.from_numpy(Ytr)

    def logits(X):
        h = torch.tanh(wte[X].reshape(len(X), -1) @ w1.T + b1)
        return h @ w2.T + b2

    t0 = time.perf_counter()
    for step, ix in enumerate(torch.from_numpy(batches)):
        if step == MLP_STEPS // 2:
            topt.param_groups[0]["lr"] = MLP_LR[1]
        loss = torch.nn.functional.cross_entropy(logits(Xt[ix]), Yt[ix])
        topt.zero_grad()
        loss.backward()
        topt.step()
    t_torch = time.perf_counter() - t0
    with torch.no_grad():
        dev_torch = torch.nn.functional.cross_entropy(logits(torch.from_numpy(Xdev)), torch.from_numpy(Ydev)).item()
    print(f"   PyTorch {torch.__version__}: dev loss {dev_torch:.4f}   train {t_torch:.1f} s   "
          f"(1 thread; ours takes {t_ours / t_torch:.2f}x its time; same initial weights and batches)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["names", "kn", "mlp", "all"], default="all")
    args = parser.parse_args()
    print("(timings are wall-clock on this machine and vary with its load)\n")
    if args.part in ("names", "all"):
        bench_names()
    if args.part in ("kn", "all"):
        bench_kneser_ney()
    if args.part in ("mlp", "all"):
        bench_mlp()


if __name__ == "__main__":
    main()
