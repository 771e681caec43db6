"""06 - Attention and GPT: causal self-attention worked by hand, then a small character GPT
trained on the embedded corpus, and where one of its heads looks.

    python examples/06_attention_gpt.py [--steps 200] [--png attention.png] [--tiny]

Runs in about 5-6 seconds on two cores (`--tiny`: a few seconds, for the tests).
What to notice:
1. attention on 4 tokens, step by step (Vaswani et al. 2017, eq. 1): the scores Q K^T / sqrt(D),
   the causal mask that sets every score above the diagonal to -inf, the softmax whose rows sum
   to 1 with exact zeros above the diagonal (token 0 can only see itself: weight 1), and the
   weighted sum of the values. The fused op and its composed twin give the same output (to
   about 1e-16 in float64);
2. the GPT's parameter count and its estimated FLOPs per token; its training loss starts near
   ln V = 4.6 nats (a uniform guess) and falls to about 2.4 in 200 steps;
3. a sample: after 200 steps, word-like strings with spaces and punctuation;
4. one head's attention for a short prompt, recomputed from the model's own parameters; fed
   through the rest of the block, the weights of all heads reproduce the block's output
   (difference ~1e-7, float32 rounding). With --png FILE (needs matplotlib), the heatmap.
The exact losses and text depend on the machine's floating point; the trend and checks do not.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import numpylm.functional as F
from numpylm import GPT, CharTokenizer, GPTConfig, Tensor, TrainConfig, generate, no_grad, train
from numpylm.autograd.ops_attention import attention_composed
from numpylm.corpus import embedded_corpus
from numpylm.training import prepare_data


def attention_step_by_step(q: np.ndarray, k: np.ndarray, v: np.ndarray):
    """Causal attention of (..., T, D) arrays in plain numpy: scores, masked scores, weights P
    and output P V, each kept so it can be printed or plotted."""
    T, D = q.shape[-2:]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(D)  # (..., T, T); sqrt(D) keeps var ~1
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # key j > query i: not seen yet
    masked = np.where(future, -np.inf, scores)
    e = np.exp(masked - masked.max(axis=-1, keepdims=True))  # exp(-inf) = 0 above the diagonal
    weights = e / e.sum(axis=-1, keepdims=True)
    return scores, masked, weights, weights @ v


def head_weights(model: GPT, ids: np.ndarray, layer: int) -> tuple[np.ndarray, float]:
    """Attention weights (H, T, T) of block `layer` for one sequence, from the block's own
    parameters, and how far the block's output rebuilt from them is from the real one."""
    H, C = model.config.n_head, model.config.n_embd
    T = len(ids)
    with no_grad():
        x = model.wte(ids[None]) + model.wpe(np.arange(T))  # (1, T, C)
        for i in range(layer):
            x = model.h[i](x)
        block = model.h[layer]
        qkv = block.attn.c_attn(block.ln_1(x)).data[0]  # (T, 3C): q, k, v side by side
        q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, H, C // H).transpose(1, 0, 2)
                   for i in range(3))  # each (H, T, D)
        _, _, weights, out = attention_step_by_step(q, k, v)
        # The rest of the block (pre-LN residual): heads side by side, c_proj, then the MLP.
        x1 = x + block.attn.c_proj(Tensor(out.transpose(1, 0, 2).reshape(1, T, C)))
        rebuilt = x1 + block.mlp(block.ln_2(x1))
        diff = float(np.abs(rebuilt.data - block(x).data).max())
    return weights, diff


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Causal self-attention by hand, then a small "
                                             "character GPT and one head's attention map.")
    ap.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    ap.add_argument("--head", type=int, default=0, help="head to show (default 0)")
    ap.add_argument("--png", metavar="FILE", help="write that head's heatmap (needs matplotlib)")
    ap.add_argument("--tiny", action="store_true", help="tiny model and data, for the tests")
    args = ap.parse_args(argv)

    print("1. causal attention on T = 4 tokens with head size D = 3 (float64)")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((4, 3)) for _ in range(3))
    scores, masked, weights, out = attention_step_by_step(q, k, v)
    for name, value in (("scores Q K^T / sqrt(D)", scores), ("after the causal mask", masked),
                        ("weights P = softmax(rows)", weights), ("output P V", out)):
        print(f"   {name}:\n" + np.array2string(value, precision=3, suppress_small=True,
                                                prefix="      ").replace("[[", "      [["))
    print(f"   row sums of P: {np.round(weights.sum(axis=1), 12)}")
    fused = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), causal=True).data
    composed = attention_composed(Tensor(q), Tensor(k), Tensor(v), causal=True).data
    print(f"   fused op vs step by step:    max difference {np.abs(fused - out).max():.1e}")
    print(f"   composed twin vs step by step: max difference {np.abs(composed - out).max():.1e}")

    text = embedded_corpus()[: 20_000 if args.tiny else None]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    data = prepare_data(tokenizer, text=text, val_fraction=0.1)
    steps = 12 if args.tiny else args.steps
    T = 16 if args.tiny else 64
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=T,
                       n_layer=1 if args.tiny else 2, n_head=2 if args.tiny else 4,
                       n_embd=16 if args.tiny else 64)
    model = GPT(config, rng=0)
    fwd = model.flops_per_token(training=False)
    print(f"\n2. a character GPT: {config.n_layer} layers, {config.n_head} heads, "
          f"C = {config.n_embd}, T = {T}, V = {config.vocab_size}")
    print(f"   {model.num_parameters():,} parameters; about {fwd:,} FLOPs per token forward, "
          f"{model.flops_per_token():,} to train (forward + backward = 3x)")
    print(f"   a uniform guess costs ln V = {math.log(config.vocab_size):.2f} nats per character")
    tc = TrainConfig(steps=steps, batch_size=4 if args.tiny else 12, block_size=T, lr=3e-3,
                     min_lr=3e-4, warmup_steps=max(steps // 10, 1), eval_interval=steps,
                     eval_batches=2 if args.tiny else 10, log_interval=max(steps // 5, 1))
    start = time.perf_counter()
    result = train(model, data, tc, log=lambda line: print("   " + line))
    seconds = time.perf_counter() - start
    trained_flops = model.flops_per_token() * steps * tc.batch_size * T
    print(f"   first loss {result.losses[0]:.3f}, last loss {result.losses[-1]:.3f}; "
          f"{steps} steps in {seconds:.1f} s, about {trained_flops / seconds / 1e9:.2f} GFLOP/s")

    print("\n3. a sample (temperature 0.8):")
    prompt = "The "
    sample = generate(model, tokenizer.encode(prompt), 40 if args.tiny else 200,
                      temperature=0.8, seed=0)
    print("   " + repr(tokenizer.decode(sample.tolist())))

    prompt = "def f(x):\n    return x"[: T]
    layer = config.n_layer - 1
    if not 0 <= args.head < config.n_head:
        ap.error(f"--head must be in 0..{config.n_head - 1}, got {args.head}")
    weights, diff = head_weights(model, np.asarray(tokenizer.encode(prompt)), layer)
    P = weights[args.head]  # (T, T)
    print(f"\n4. attention of layer {layer}, head {args.head} on {prompt!r}:")
    print(f"   rows sum to 1 (max error {np.abs(P.sum(axis=1) - 1).max():.1e}); largest "
          f"weight above the diagonal: {P[np.triu_indices(len(prompt), 1)].max():.1f}")
    top = np.argsort(-P[-1])[:3]
    looks = ", ".join(f"{prompt[j]!r} at {j} ({P[-1, j]:.2f})" for j in top)
    print(f"   the last character {prompt[-1]!r} looks most at: {looks}")
    print(f"   all heads through the rest of the block reproduce its output: "
          f"max difference {diff:.1e}")
    if args.png:
        try:
            from numpylm.plots import plot_attention
            plot_attention(P, list(prompt), args.png, title=f"layer {layer}, head {args.head}")
            print(f"   heatmap written to {args.png}")
        except ImportError as err:
            print(f"   no heatmap: {err}")


if __name__ == "__main__":
    main()
