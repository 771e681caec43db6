"""Quality yardstick: a character-level GPT on tiny Shakespeare with nanoGPT's CPU recipe, trained
by numpylm's own loop, and the same recipe in PyTorch when it is installed.

    python benchmarks/bench_shakespeare.py [--steps 2000] [--no-peer]

Recipe (see ../shared/data/README.md): n_layer 4, n_head 4, n_embd 128, block_size 64,
batch_size 12, 2000 iterations, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4,
AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, grad clip 1.0, dropout 0, first 90%
train / last 10% validation, GPT-2 initialisation. The score is the validation loss as the
mean over 200 random validation batches. Target: <= 1.93 after 2000 iterations (PyTorch
with this recipe: about 1.90). Prints loss, wall time, and time relative to PyTorch.

Without ../shared/data/tinyshakespeare.txt it falls back to the embedded corpus (a different
text, so the target does not apply).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from numpylm.corpus import embedded_corpus
from numpylm.training import estimate_loss
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import TrainConfig, prepare_data, train

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.93
MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=True)


def recipe(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=12, block_size=64, lr=1e-3, min_lr=1e-4,
                       warmup_steps=100, decay_steps=steps - 100, weight_decay=0.1, beta1=0.9,
                       beta2=0.99, grad_clip=1.0, eval_interval=max(steps // 4, 1),
                       eval_batches=20, log_interval=max(steps // 20, 1), seed=1337)


def run_numpylm(data, vocab_size: int, config: TrainConfig,
                eval_batches: int) -> tuple[float, float]:
    model = GPT(GPTConfig(vocab_size=vocab_size, **MODEL), rng=1337)
    t0 = time.perf_counter()
    train(model, data, config, log=lambda line: print("  numpylm:", line, flush=True))
    seconds = time.perf_counter() - t0
    val = estimate_loss(model, data.val, config.batch_size, config.block_size, eval_batches,
                        seed=2024)
    return val, seconds


def run_torch(data, vocab_size: int, config: TrainConfig, eval_batches: int):
    """The same recipe in PyTorch (a nanoGPT-style model written here), on the same batches."""
    try:
        import torch
        import torch.nn as tnn
        import torch.nn.functional as tF
    except ImportError:
        return None
    from numpylm.training import get_batch

    torch.manual_seed(1337)
    C, H, L, T = MODEL["n_embd"], MODEL["n_head"], MODEL["n_layer"], MODEL["block_size"]

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = tnn.LayerNorm(C), tnn.LayerNorm(C)
            self.c_attn, self.attn_proj = tnn.Linear(C, 3 * C), tnn.Linear(C, C)
            self.c_fc, self.mlp_proj = tnn.Linear(C, 4 * C), tnn.Linear(4 * C, C)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T_, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = tF.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T_, C))
            return x + self.mlp_proj(tF.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class TorchGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(vocab_size, C), tnn.Embedding(T, C)
            self.h = tnn.ModuleList(Block() for _ in range(L))
            self.ln_f = tnn.LayerNorm(C)
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    tnn.init.zeros_(p)
                elif p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                    tnn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return tF.cross_entropy(logits.view(-1, vocab_size), targets.view(-1))

    model = TorchGPT()
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        x, y = get_batch(data.train, config.batch_size, config.block_size, rng)
        loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        if (step + 1) % config.log_interval == 0:
            print(f"  torch: step {step + 1}/{config.steps} | loss {loss.item():.4f}", flush=True)
    seconds = time.perf_counter() - t0
    rng = np.random.default_rng(2024)
    with torch.no_grad():
        model.eval()
        losses = [model(*map(torch.from_numpy,
                             get_batch(data.val, config.batch_size, config.block_size, rng))).item()
                  for _ in range(eval_batches)]
    return float(np.mean(losses)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-batches", type=int, default=200)
    parser.add_argument("--data", default=str(DATA), help="tiny Shakespeare (or any UTF-8 text)")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTorch run")
    args = parser.parse_args()

    path = Path(args.data)
    text = path.read_text(encoding="utf-8") if path.is_file() else embedded_corpus()
    source = str(path) if path.is_file() else "the embedded corpus (tiny Shakespeare not found)"
    tokenizer = CharTokenizer.from_text(text)
    data = prepare_data(tokenizer, text=text, val_fraction=0.1)
    config = recipe(args.steps)
    print(f"data: {source}; {len(data.train):,} train / {len(data.val):,} val chars, "
          f"vocabulary {tokenizer.vocab_size}")
    print(f"model: GPT {MODEL}; {args.steps} steps of {config.batch_size} x {config.block_size}")

    ours, ours_s = run_numpylm(data, tokenizer.vocab_size, config, args.eval_batches)
    peer = None if args.no_peer else run_torch(data, tokenizer.vocab_size, config,
                                               args.eval_batches)
    print()
    print(f"{'implementation':<16}{'val loss':>10}{'wall time':>12}{'tokens/s':>12}")
    tokens = args.steps * config.batch_size * config.block_size
    print(f"{'numpylm':<16}{ours:>10.4f}{ours_s:>11.1f}s{tokens / ours_s:>12,.0f}")
    if peer is not None:
        peer_loss, peer_s = peer
        print(f"{'pytorch':<16}{peer_loss:>10.4f}{peer_s:>11.1f}s{tokens / peer_s:>12,.0f}")
        print(f"numpylm / pytorch wall time: {ours_s / peer_s:.2f}x; "
              f"loss difference {ours - peer_loss:+.4f}")
    else:
        print("pytorch: skipped (not installed or --no-peer)")
    if path.is_file() and args.steps == 2000:
        verdict = "met" if ours <= TARGET else "NOT met"
        print(f"target val loss <= {TARGET}: {verdict} ({ours:.4f})")


if __name__ == "__main__":
    main()
