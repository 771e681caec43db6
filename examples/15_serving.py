"""15 - Serving: a paged KV cache and continuous batching, so that one copy of a model answers many
requests at once and a short request never waits for a long one.

    python examples/15_serving.py [--long-tokens 200] [--tiny]

Runs a small Llama-layout model (random weights: scheduling does not care what the model says)
on one long request and six short ones that arrive just after it; about 20 seconds on two
cores (`--tiny`: a few seconds, for the tests). What to notice:
1. one at a time, the short requests wait for the whole long answer; in a static batch they
   wait for it too (a batch ends with its longest member); with continuous batching they join
   the running batch at the next step and are finished after a few steps, while the long one
   keeps going: the short requests' latency drops by an order of magnitude;
2. every request's tokens are exactly `generate`'s greedy tokens, whichever way it ran;
3. the paged pool holds only the blocks the tokens need (under one block of waste a
   sequence), against a contiguous cache of the full context for every sequence;
4. with a pool too small for everyone, the newest sequences are pre-empted and recomputed
   later: the output is unchanged, only slower;
5. requests that begin with the same system prompt share its blocks (prefix sharing): the
   later ones skip reading it, and still give the same tokens.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from numpylm import blas
from numpylm.inference import generate
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.serving import Engine


def run_engine(engine: Engine, arrivals: list[tuple[int, list[int], int]]):
    """Feed requests at their arrival steps; (tokens, finish step, finish seconds) per request."""
    start, out, done = time.perf_counter(), {}, {}
    pending = sorted(arrivals, key=lambda a: a[0])
    ids = {}
    step = 0
    while pending or engine.has_work():
        while pending and pending[0][0] <= step:
            _, prompt, n = pending.pop(0)
            ids[engine.add_request(prompt, n)] = len(ids)
        for event in engine.step():
            out.setdefault(ids[event.request_id], []).append(event.token)
            if event.finish_reason:
                done[ids[event.request_id]] = (step, time.perf_counter() - start)
        step += 1
    return [out[i] for i in range(len(ids))], done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A paged KV cache and continuous batching on a "
                                             "small model: short requests never wait.")
    ap.add_argument("--long-tokens", type=int, default=200, help="tokens of the long answer")
    ap.add_argument("--tiny", action="store_true", help="a tiny model, for the tests")
    args = ap.parse_args(argv)
    blas.set_threads(1)  # small matrices: one thread is fastest, and fair on a shared machine
    width, layers, long_n = (32, 2, 40) if args.tiny else (128, 4, args.long_tokens)
    model = Llama(LlamaConfig(vocab_size=256, hidden_size=width, intermediate_size=2 * width,
                              num_hidden_layers=layers, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=512),
                  rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    long_prompt = [int(t) for t in rng.integers(0, 256, 60)]
    shorts = [[int(t) for t in rng.integers(0, 256, n)] for n in (5, 9, 14, 7, 11, 6)]
    short_n = 8
    want = [list(generate(model, np.array(p), n, temperature=0)[len(p):])
            for p, n in [(long_prompt, long_n)] + [(s, short_n) for s in shorts]]

    print("1. Six short requests (8 tokens) arrive just after a long one "
          f"({long_n} tokens).\n")
    t0 = time.perf_counter()
    ends = []
    for p, n in [(long_prompt, long_n)] + [(s, short_n) for s in shorts]:
        generate(model, np.array(p), n, temperature=0)
        ends.append(time.perf_counter() - t0)
    print(f"   one at a time:       short requests done after {np.mean(ends[1:]):6.2f} s "
          f"on average (long: {ends[0]:.2f} s)")
    t0 = time.perf_counter()
    generate(model, [long_prompt] + shorts, long_n, temperature=0)
    static = time.perf_counter() - t0
    print(f"   one static batch:    short requests done after {static:6.2f} s "
          f"(the batch ends with its longest member)")
    engine = Engine(model, page_size=16, max_running=8, max_tokens_per_step=64)
    arrivals = [(0, long_prompt, long_n)] + [(1 + i, s, short_n) for i, s in enumerate(shorts)]
    outputs, done = run_engine(engine, arrivals)
    short_s = np.mean([done[i][1] for i in range(1, 7)])
    print(f"   continuous batching: short requests done after {short_s:6.2f} s "
          f"(steps {[done[i][0] for i in range(1, 7)]}), the long one after "
          f"{done[0][1]:.2f} s (step {done[0][0]})")
    print(f"   short requests' latency: {np.mean(ends[1:]) / short_s:.0f}x lower than one at a "
          f"time, {static / short_s:.0f}x lower than a static batch")

    print(f"\n2. Same tokens as generate's greedy decoding: {outputs == want}")

    c = model.config
    per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4  # bytes
    tokens = [len(p) + n for p, n in [(long_prompt, long_n)] + [(s, short_n) for s in shorts]]
    blocks = sum(-(-t // 16) for t in tokens)
    print(f"\n3. Memory for these {len(tokens)} sequences ({sum(tokens)} tokens): paged, "
          f"{blocks} blocks of 16 = {blocks * 16 * per_token / 1024:.0f} KiB; contiguous at "
          f"the full context {c.max_position_embeddings}: "
          f"{len(tokens) * c.max_position_embeddings * per_token / 1024:.0f} KiB")

    many = [(0, s, 40) for s in shorts]  # six requests of 40 tokens at once: 3-4 blocks each
    want = [list(generate(model, np.array(p), n, temperature=0)[len(p):]) for _, p, n in many]
    small = Engine(model, page_size=16, max_running=8, max_tokens_per_step=64, num_blocks=8)
    outputs, _ = run_engine(small, many)
    print(f"\n4. Six requests of 40 tokens (3-4 blocks each) on a pool of only "
          f"{small.cache.num_blocks} blocks: {small.scheduler.preemptions} pre-emptions, same "
          f"tokens as generate: {outputs == want}, every block free at the end: "
          f"{small.cache.num_free == small.cache.num_blocks}")

    system = [int(t) for t in rng.integers(0, 256, 100)]  # one long shared beginning
    chats = [(i, system + s, short_n) for i, s in enumerate(shorts)]  # arriving one a step
    want = [list(generate(model, np.array(p), n, temperature=0)[len(p):]) for _, p, n in chats]
    shared = Engine(model, page_size=16, max_running=8, max_tokens_per_step=64,
                    share_prefixes=True)
    t0 = time.perf_counter()
    outputs, _ = run_engine(shared, chats)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = Engine(model, page_size=16, max_running=8, max_tokens_per_step=64)
    unshared, _ = run_engine(plain, chats)
    alone = time.perf_counter() - t0
    print(f"\n5. Six requests that begin with the same {len(system)}-token system prompt: "
          f"{shared.cache.prefix_hits} blocks of it shared instead of computed "
          f"({shared.cache.prefix_hits * 16} prompt tokens not read again; without sharing "
          f"{plain.cache.prefix_hits}), {seconds:.2f} s against {alone:.2f} s without "
          f"sharing; same tokens as without sharing: {outputs == unshared}, as generate: "
          f"{outputs == want}")


if __name__ == "__main__":
    main()
