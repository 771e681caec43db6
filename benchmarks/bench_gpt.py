"""Training-step speed of numpylm's GPT against PyTorch eager running the same model.

One step = forward + backward + AdamW update, on random character-level batches.
Config A: 4 layers, 4 heads, width 128, block 64, batch 12, vocabulary 65.
Config B: 6 layers, 6 heads, width 384, block 256, batch 16, vocabulary 65.
Prints the median step time of each and the ratio numpylm / PyTorch (lower is better),
measured in alternating rounds.

Run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gpt.py`
so that OpenBLAS picks its native kernel. Usage: `bench_gpt.py [--config A|B|both]
[--steps N] [--rounds R] [--threads N]` (`--threads 1` compares single-threaded, steadier
on a busy machine).
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment
from _timing import all_times, alternating_rounds, ratio_text, round_ratios
import statistics

import numpy as np

from numpylm.models.gpt import GPT, GPTConfig
from numpylm.optim import AdamW

CONFIGS = {
    "A": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12, steps=5),
    "B": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=16, steps=2),
}
VOCAB = 65


def batches(batch: int, block: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        x = rng.integers(0, VOCAB, (batch, block + 1))
        yield np.ascontiguousarray(x[:, :-1]), np.ascontiguousarray(x[:, 1:])


def _on_batches(step, setting: dict):
    """`step` as a call without arguments, each call on the next random batch (drawing one
    takes microseconds, against steps of tens of milliseconds and more)."""
    data = batches(setting["batch"], setting["block_size"])
    return lambda: step(*next(data))


def numpylm_step(model: GPT):
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def step(x, y):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def torch_step(model: GPT):
    import torch
    import torch.nn.functional as TF

    c = model.config
    params = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    for p in params.values():
        p.requires_grad_(True)
    H = c.n_head

    def forward(x, y):
        B, T = x.shape
        h = params["wte.weight"][x] + params["wpe.weight"][:T]
        for i in range(c.n_layer):
            p = lambda name: params[f"h.{i}.{name}"]
            a = TF.layer_norm(h, (c.n_embd,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
            qkv = torch.addmm(p("attn.c_attn.bias"), a.view(B * T, -1), p("attn.c_attn.weight"))
            q, k, v = qkv.view(B, T, 3, H, -1).permute(2, 0, 3, 1, 4)
            o = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
            o = o.transpose(1, 2).reshape(B * T, -1)
            h = h + torch.addmm(p("attn.c_proj.bias"), o, p("attn.c_proj.weight")).view(B, T, -1)
            m = TF.layer_norm(h, (c.n_embd,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
            m = TF.gelu(torch.addmm(p("mlp.c_fc.bias"), m.view(B * T, -1),
                                    p("mlp.c_fc.weight")), approximate="tanh")
            h = h + torch.addmm(p("mlp.c_proj.bias"), m, p("mlp.c_proj.weight")).view(B, T, -1)
        h = TF.layer_norm(h, (c.n_embd,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
        logits = h @ params["wte.weight"].T
        return TF.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    opt = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=0.1)

    def step(x, y):
        loss = forward(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def first_loss(x, y):
        with torch.no_grad():
            return forward(torch.from_numpy(x), torch.from_numpy(y)).item()

    return step, first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["A", "B", "both"], default="both")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per side and round (default: 5 for A, 2 for B)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    try:
        import torch
        if THREADS is not None:
            torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        torch = None
        print("PyTorch not installed: timing numpylm only")
    names = ["A", "B"] if args.config == "both" else [args.config]
    for name in names:
        s = CONFIGS[name]
        steps = args.steps or s["steps"]
        config = GPTConfig(vocab_size=VOCAB, block_size=s["block_size"], n_layer=s["n_layer"],
                           n_head=s["n_head"], n_embd=s["n_embd"])
        model = GPT(config, rng=0)
        x, y = next(batches(s["batch"], s["block_size"]))
        first_loss = model(x, y)[1].item()
        sides = [_on_batches(numpylm_step(model), s)]
        if torch is not None:
            fresh = GPT(config, rng=0)
            step, torch_loss = torch_step(fresh)
            # Same weights, same batch: equal losses show both sides run the same model.
            assert abs(torch_loss(x, y) - first_loss) < 1e-4, (torch_loss(x, y), first_loss)
            sides.append(_on_batches(step, s))
        times = alternating_rounds(sides, args.rounds, steps)
        ours = statistics.median(all_times(times[0]))
        line = (f"config {name} (L={s['n_layer']}, H={s['n_head']}, C={s['n_embd']}, "
                f"T={s['block_size']}, B={s['batch']}): numpylm {ours * 1e3:8.1f} ms/step")
        if torch is not None:
            theirs = statistics.median(all_times(times[1]))
            ratios = round_ratios(times[0], times[1])
            line += f" | PyTorch {theirs * 1e3:8.1f} ms/step | ratio {ratio_text(ratios)}"
            tokens = s["batch"] * s["block_size"]
            line += f" | numpylm {tokens / ours:,.0f} tokens/s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
