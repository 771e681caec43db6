"""08 - Sampling and the KV cache: how the same model writes differently under greedy decoding,
temperature, top-k and top-p; why a seed repeats a sample; streaming; and what the cache saves.

    python examples/08_sampling_kv_cache.py [--steps 100] [--checkpoint DIR] [--tiny]

Trains a small character GPT on the embedded corpus for a few seconds (or loads a model with
--checkpoint: a `numpylm train` directory or a GPT-2-format one). Runs in about 6 seconds on
two cores (`--tiny`: a few seconds, for the tests). What to notice:
1. the next-token distribution after the prompt: its entropy grows with the temperature
   (softmax(z / t) flattens as t grows); top-k keeps exactly k tokens, top-p the fewest
   most likely tokens whose probabilities add up to at least p;
2. samples at each setting, with the model's own surprise at them (mean -log p per token):
   greedy (temperature 0) is the least surprising and often falls into a loop; 1.5 is the most
   surprising and reads as noise; 0.8, top-k and top-p sit between;
3. the same seed gives the same sample, another seed another one; greedy ignores the seed;
4. streaming: tokens are printed as each is chosen, and they are the tokens `generate` returns;
5. the KV cache: generating with and without it gives the same tokens, but without it every
   step reruns the whole context (positions computed grow with the square of the length), so
   the cache is many times faster (about 10-30x here; the printed speed-up varies by machine).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from numpylm import GPT, CharTokenizer, GPTConfig, TrainConfig, generate, generate_stream, train
from numpylm.autograd.tensor import no_grad
from numpylm.corpus import embedded_corpus
from numpylm.inference import top_k_filter, top_p_filter
from numpylm.inference.sampling import softmax
from numpylm.training import load_model, prepare_data

SETTINGS = [("greedy (temperature 0)", dict(temperature=0.0)),
            ("temperature 0.8", dict(temperature=0.8)),
            ("temperature 1.5", dict(temperature=1.5)),
            ("top-k 10", dict(temperature=1.0, top_k=10)),
            ("top-p 0.9", dict(temperature=1.0, top_p=0.9))]


def small_gpt(tiny: bool, steps: int):
    """A character GPT trained briefly with the shared loop; (model, tokenizer)."""
    text = embedded_corpus()[: 20_000 if tiny else None]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    T = 32 if tiny else 128  # a long context, so that the cache has something to save
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=T, n_layer=1 if tiny else 2,
                          n_head=2 if tiny else 4, n_embd=16 if tiny else 64), rng=0)
    config = TrainConfig(steps=steps, batch_size=4 if tiny else 8, block_size=T, lr=4e-3,
                         min_lr=4e-4, warmup_steps=max(steps // 10, 1), eval_interval=steps,
                         eval_batches=2, log_interval=max(steps // 3, 1))
    train(model, prepare_data(tokenizer, text=text), config, log=lambda s: print("   " + s))
    return model, tokenizer


def surprise(model, ids: np.ndarray, n_prompt: int) -> float:
    """Mean -log p (nats) that the model gives the tokens after the prompt, at temperature 1."""
    with no_grad():
        logits, _ = model(ids[None, :-1])
    logp = np.log(softmax(logits.data[0]))  # (T-1, V): row t predicts ids[t + 1]
    rows = np.arange(n_prompt - 1, len(ids) - 1)
    return float(-logp[rows, ids[rows + 1]].mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Greedy, temperature, top-k and top-p sampling, "
                                             "seeds, streaming, and the KV cache's speed-up.")
    ap.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    ap.add_argument("--checkpoint", metavar="DIR", help="use this GPT instead of training one")
    ap.add_argument("--prompt", default="The ", help="text to continue (default 'The ')")
    ap.add_argument("--tiny", action="store_true", help="tiny model and data, for the tests")
    args = ap.parse_args(argv)

    if args.checkpoint:
        loaded = load_model(args.checkpoint)
        model, tokenizer = loaded.model, loaded.tokenizer
        if not isinstance(model, GPT):  # the KV cache belongs to attention models
            raise SystemExit(f"error: {args.checkpoint} holds a {loaded.family!r} model; "
                             f"this example needs a GPT")
        print(f"loaded {loaded.family} model from {args.checkpoint}")
    else:
        print("training a small character GPT:")
        model, tokenizer = small_gpt(args.tiny, 10 if args.tiny else args.steps)
    model.eval()
    prompt = np.asarray(tokenizer.encode(args.prompt), dtype=np.int64)
    if not 0 < len(prompt) < model.config.block_size:
        ap.error(f"--prompt must be 1 to {model.config.block_size - 1} tokens, "
                 f"got {len(prompt)}")
    # New tokens that fit the context with the prompt, so one forward pass scores a sample
    # and the cached run never has to slide its window.
    n = min(model.config.block_size - len(prompt), 100)

    with no_grad():
        logits = model(prompt[None])[0].data[0, -1]  # (V,): scores of the next token
    print(f"\n1. the next token after {args.prompt!r}:")
    for t in (0.5, 0.8, 1.0, 1.5):
        p = softmax(logits / t)
        best = ", ".join(f"{tokenizer.decode([int(i)])!r} {p[i]:.2f}" for i in np.argsort(-p)[:3])
        entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
        print(f"   temperature {t}: entropy {entropy:.2f} bits; most likely {best}")
    kept_k = np.isfinite(top_k_filter(logits[None], 10)).sum()
    nucleus = np.isfinite(top_p_filter(logits[None], 0.9))[0]
    print(f"   top-k 10 keeps {kept_k} tokens; top-p 0.9 keeps {nucleus.sum()} tokens holding "
          f"{softmax(logits)[nucleus].sum():.3f} of the probability")

    print(f"\n2. {n} new tokens at each setting (surprise = mean -log p under the model):")
    for label, kw in SETTINGS:
        out = generate(model, prompt, n, seed=0, **kw)
        shown = tokenizer.decode(out.tolist())[:90]
        print(f"   {label:24s} surprise {surprise(model, out, len(prompt)):.2f}  {shown!r}")

    same = np.array_equal(generate(model, prompt, n, seed=1), generate(model, prompt, n, seed=1))
    other = np.array_equal(generate(model, prompt, n, seed=1), generate(model, prompt, n, seed=2))
    greedy = np.array_equal(generate(model, prompt, n, temperature=0, seed=1),
                            generate(model, prompt, n, temperature=0, seed=2))
    print(f"\n3. same seed, same sample: {same}; seeds 1 and 2 give the same sample: {other}; "
          f"greedy with seeds 1 and 2: {greedy}")

    print("\n4. streaming (temperature 0.8), each token printed as soon as it is chosen:\n   "
          + repr(args.prompt)[1:-1], end="")
    streamed, times, start = [], [], time.perf_counter()
    for token in generate_stream(model, prompt, n, temperature=0.8, seed=0):
        times.append(time.perf_counter() - start)
        streamed.append(token)
        print(repr(tokenizer.decode([token]))[1:-1], end="", flush=True)  # newlines as \n
    whole = generate(model, prompt, n, temperature=0.8, seed=0)
    print(f"\n   first token after {1000 * times[0]:.1f} ms, then "
          f"{1000 * (times[-1] - times[0]) / max(len(times) - 1, 1):.2f} ms per token; "
          f"streamed tokens equal generate()'s: {streamed == whole[len(prompt):].tolist()}")

    print(f"\n5. {n} tokens with and without the KV cache (temperature 0.8, seed 0):")
    tokens, seconds = {}, {}
    for use_cache in (False, True):
        start = time.perf_counter()
        tokens[use_cache] = generate(model, prompt, n, temperature=0.8, seed=0,
                                     use_cache=use_cache)
        seconds[use_cache] = time.perf_counter() - start
    P = len(prompt)
    # Without the cache, step s reruns all P + s tokens; with it, the prompt once, then one.
    rerun, cached = sum(P + s for s in range(n)), P + n - 1
    for use_cache, name, positions in ((False, "without", rerun), (True, "with", cached)):
        print(f"   {name:7s} cache: {seconds[use_cache]:6.2f} s, "
              f"{n / seconds[use_cache]:7.0f} tokens/s, {positions:,} positions computed")
    print(f"   same tokens: {np.array_equal(tokens[False], tokens[True])}; speed-up with the "
          f"cache: {seconds[False] / seconds[True]:.1f}x")

if __name__ == "__main__":
    main()
