"""12 - Decoding beyond sampling: beam search, penalties, log-probabilities, speculative decoding
and constrained output, side by side on small character GPTs trained on the embedded corpus.

    python examples/12_decoding.py [--steps 300] [--new-tokens 48] [--tiny]

Trains a 4-layer character GPT (the target), a 1-layer one and a 1-layer GRU (the drafts) by
the same recipe, then decodes with each technique; about 15 seconds in all on two cores
(`--tiny`: a few seconds, for the tests). What to notice:
1. greedy decoding commits to one token at a time; beam search (4 beams) keeps the best
   partial sequences and finds a continuation at least as likely (mean log p per token never
   lower than greedy's); sampling wanders, and a repetition or presence penalty cuts how
   often it repeats itself (repeated 4-grams);
2. log-probabilities: how sure the model was of each token, and what it weighed instead;
3. speculative decoding: the draft proposes k tokens, the target checks them in one call;
   the output is *identical* to the target's greedy output, with several tokens per target
   call (acceptance rate ~0.7-0.85 here). Whether that is faster depends on what a call
   costs, printed first: models this small spend most of a call on fixed overhead, so a
   1-layer draft costs about a third of a 4-layer target step and checking k + 1 positions
   costs about one and a half steps (about 1.3-1.4x here; timings are noisy on a shared
   machine). A draft only has to share the target's vocabulary: the GRU's step is a few small
   products with no cache to attend over, cheaper than the GPT draft's, so at a similar
   acceptance its guesses pay more (1.75x at k = 4 in one run here;
   benchmarks/bench_decoding.py measures 1.6x with the GRU draft and a wider target, 1.3x with
   the 1-layer GPT). Prompt lookup drafts for free and gains 2-3x here: a looping character
   model repeats itself a lot;
4. constrained decoding: whatever the model would rather write, the output matches a date
   regex, one of a list of choices, or a small JSON schema.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import regex

from numpylm import GPT, CharTokenizer, GPTConfig, TrainConfig, blas, train
from numpylm.corpus import embedded_corpus
from numpylm.inference import (SamplingParams, beam_search, choice_regex, constrained_generate,
                               generate, generate_with_logprobs, json_schema_regex,
                               speculative_generate)
from numpylm.inference.logprobs import log_softmax
from numpylm.inference.rewind import Cursor
from numpylm.models import RNNLM
from numpylm.training import prepare_data


def trained_gpt(tokenizer, data, n_layer: int, n_embd: int, steps: int, T: int) -> GPT:
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=T, n_layer=n_layer,
                          n_head=4 if n_embd >= 32 else 2, n_embd=n_embd), rng=0)
    config = TrainConfig(steps=steps, batch_size=8, block_size=T, lr=4e-3, min_lr=4e-4,
                         warmup_steps=max(steps // 10, 1), eval_interval=steps, eval_batches=2,
                         log_interval=steps)
    train(model, data, config, log=lambda s: print("   " + s) if "val" in s else None)
    return model.eval()


def trained_gru(tokenizer, data, hidden: int, steps: int, T: int) -> RNNLM:
    """A 1-layer GRU language model trained like the GPTs (a draft of another family)."""
    model = RNNLM(tokenizer.vocab_size, hidden // 2, hidden, cell="gru", rng=0)
    config = TrainConfig(steps=steps, batch_size=8, block_size=T, lr=4e-3, min_lr=4e-4,
                         warmup_steps=max(steps // 10, 1), eval_interval=steps, eval_batches=2,
                         log_interval=steps)
    train(model, data, config, log=lambda s: print("   " + s) if "val" in s else None)
    return model.eval()


def mean_logprob(model, ids: np.ndarray, n_prompt: int) -> float:
    """Mean log p (nats) of the tokens after the prompt under the model."""
    logits, _ = model(ids[None, :-1])
    lp = log_softmax(logits.data[0])  # (T-1, V): row t predicts ids[t + 1]
    rows = np.arange(n_prompt - 1, len(ids) - 1)
    return float(lp[rows, ids[rows + 1]].mean())


def repeated_4grams(ids) -> int:
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    return len(grams) - len(set(grams))


def best_time(fn, repeats: int = 3) -> tuple[float, object]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def call_cost(model, prompt: np.ndarray, T: int, repeats: int = 20) -> float:
    """Best seconds of one call scoring T positions after the prompt (then taken back)."""
    cursor, best = Cursor(model, list(prompt)), float("inf")
    for _ in range(repeats):
        cursor.mark(T)
        start = time.perf_counter()
        cursor.feed(list(prompt[:T]))
        best = min(best, time.perf_counter() - start)
        cursor.rewind(len(prompt))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Beam search, penalties, log-probabilities, "
                                             "speculative and constrained decoding.")
    ap.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    ap.add_argument("--new-tokens", type=int, default=48, help="tokens to generate (48)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and data, for the tests")
    args = ap.parse_args(argv)
    # Small models make small matrix products: one BLAS thread is fastest, and steady.
    blas.set_threads(1)
    corpus = embedded_corpus()
    tokenizer = CharTokenizer.from_text(corpus, unk="<unk>")  # every character: { } for JSON
    data = prepare_data(tokenizer, text=corpus[: 20_000 if args.tiny else None])
    steps = 20 if args.tiny else args.steps
    T = 64
    print("training the target (4 layers) and the drafts (1 layer; a 1-layer GRU):")
    target = trained_gpt(tokenizer, data, 2 if args.tiny else 4, 16 if args.tiny else 64, steps, T)
    draft = trained_gpt(tokenizer, data, 1, 16 if args.tiny else 64, steps + steps // 3, T)
    gru = trained_gru(tokenizer, data, 16 if args.tiny else 128, steps + steps // 3, T)
    prompt = np.asarray(tokenizer.encode("The following "), dtype=np.int64)
    n = min(args.new_tokens, T - len(prompt) - 1)
    show = lambda ids: repr(tokenizer.decode(list(ids[len(prompt):])))  # noqa: E731

    print(f"\n1. greedy, beam search and sampling ({n} new tokens; mean log p per token):")
    greedy = generate(target, prompt, n, temperature=0)
    beams = beam_search(target, prompt, n, num_beams=4, length_penalty=0.0)
    best = beams[0].ids
    print(f"   greedy       {mean_logprob(target, greedy, len(prompt)):6.3f}  {show(greedy)}")
    print(f"   beam search  {mean_logprob(target, best, len(prompt)):6.3f}  {show(best)}")
    at_least = (mean_logprob(target, best, len(prompt))
                >= mean_logprob(target, greedy, len(prompt)) - 1e-6)
    print(f"   beam search finds a sequence at least as likely as greedy: {at_least}")
    for label, params in (("sampling", SamplingParams(0.8, seed=0)),
                          ("+ repetition 1.3", SamplingParams(0.8, seed=0, repetition_penalty=1.3)),
                          ("+ presence 1.0", SamplingParams(0.8, seed=0, presence_penalty=1.0))):
        out = generate(target, prompt, n, sampling=params)
        print(f"   {label:16s} repeated 4-grams {repeated_4grams(list(out[len(prompt):])):3d}  "
              f"{show(out)}")

    print("\n2. log-probabilities of the first greedy tokens, with the top 3 alternatives:")
    _, records = generate_with_logprobs(target, prompt, 5, top_logprobs=3,
                                        sampling=SamplingParams(0))
    for r in records:
        alternatives = ", ".join(f"{tokenizer.decode([i])!r} {np.exp(v):.2f}" for i, v in r.top)
        print(f"   {tokenizer.decode([r.token])!r}: p {np.exp(r.logprob):.2f}   ({alternatives})")

    print(f"\n3. speculative decoding, greedy ({n} tokens; best of 3 timings):")
    costs = {"draft step": call_cost(draft, prompt, 1), "GRU draft step": call_cost(gru, prompt, 1),
             "target step": call_cost(target, prompt, 1),
             "target checking 5": call_cost(target, prompt, 5)}
    print("   one call: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in costs.items()))
    base, reference = best_time(lambda: generate(target, prompt, n, temperature=0))
    print(f"   plain greedy: {n / base:6.0f} tokens/s")
    runs = ([(f"draft, k={k}", draft, k) for k in (2, 4, 6)]
            + [(f"GRU draft, k={k}", gru, k) for k in (2, 4)] + [("prompt lookup, k=4", None, 4)])
    for label, drafter, k in runs:
        seconds, r = best_time(lambda: speculative_generate(target, prompt, n, drafter, k=k))
        print(f"   {label:18s} identical to greedy: {np.array_equal(r.ids, reference)}; "
              f"acceptance {r.acceptance_rate:.2f}; {r.tokens_per_round:.2f} tokens per target "
              f"call; {n / seconds:6.0f} tokens/s, speed-up {base / seconds:.2f}x")

    print("\n4. constrained output (greedy), whatever the model would rather write:")
    for label, pattern in (("a date", r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
                           ("a choice", choice_regex(["True", "False", "None"])),
                           ("JSON", json_schema_regex({"type": "object", "properties": {
                               "name": {"enum": ["print", "len", "open"]},
                               "ok": {"type": "boolean"},
                               "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                        "maxItems": 3}}}))):
        out = constrained_generate(target, tokenizer, prompt, 60, pattern)
        written = tokenizer.decode(list(out[len(prompt):]))
        ok = regex.fullmatch(pattern, written) is not None
        if label == "JSON":
            ok = ok and isinstance(json.loads(written), dict)
        print(f"   {label:8s} matches: {ok}  {written!r}")


if __name__ == "__main__":
    main()
