"""11 - The modern decoder: what Llama changes from GPT-2 (RMSNorm, RoPE, SwiGLU, grouped-query
attention), each shown on numbers, then a GPT and a Llama of the same size trained side by side.

    python examples/11_llama_modern_decoder.py [--steps 300] [--tiny]

Runs in about 25 seconds on two idle cores (`--tiny`: a few seconds, for the tests).
What to notice:
1. RMSNorm is LayerNorm without the mean: on a vector with mean 0 the two agree exactly, on
   another they differ; it has no bias, so C parameters instead of 2C;
2. RoPE: a query at position m and a key at n give the same score as at m + 7 and n + 7
   (only the distance counts), unlike GPT-2's learned position table; loading
   interleaved (GGUF) q/k weights into the rotate-half (HF) model without permuting their
   rows gives other scores, permuted rows give the same ones;
3. SwiGLU: three matrices of width I = 8C/3 hold as many weights as GPT-2's two of width 4C;
4. grouped-query attention: with 4 query heads sharing 1 key-value head (multi-query) the
   KV cache is 4x smaller, and decoding with it gives exactly `forward`'s logits;
5. a character GPT and a character Llama with about the same number of parameters, trained
   with the same steps, batch and learning rate: both losses fall from ln V, the Llama's
   further (validation about 1.87 against 2.29 after 300 steps here; on tiny Shakespeare
   at 0.8M parameters, benchmarks/bench_llama_shakespeare.py, the Llama wins too). RoPE
   costs no parameters, so the Llama spends GPT-2's position table on a wider MLP.
The exact losses depend on the machine's floating point; the checks do not.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import numpylm.functional as F
from numpylm.blas import apply_thread_policy
from numpylm import CharTokenizer, GPT, GPTConfig, Tensor, TrainConfig, no_grad, train
from numpylm.autograd.ops_rope import (apply_rope, interleaved_to_rotate_half,
                                       rotate_half_to_interleaved, rope_tables)
from numpylm.corpus import embedded_corpus
from numpylm.models.llama import Llama, LlamaConfig, gpt_budget_intermediate_size
from numpylm.training import prepare_data


def show_norms() -> None:
    print("1. RMSNorm vs LayerNorm (weight 1, no bias, eps 0)")
    one = Tensor(np.ones(4))
    for x in (np.array([1.0, -1.0, 2.0, -2.0]), np.array([1.0, 2.0, 3.0, 4.0])):
        rms = F.rms_norm(Tensor(x), one, eps=0.0).data
        ln = F.layer_norm(Tensor(x), one, None, eps=0.0).data
        print(f"   x = {x}, mean {x.mean():.1f}: rms_norm {np.round(rms, 3)}, "
              f"layer_norm {np.round(ln, 3)}, equal: {np.allclose(rms, ln)}")


def show_rope() -> None:
    print("\n2. RoPE: the score of a query at m and a key at n depends on m - n only")
    rng = np.random.default_rng(0)
    D = 8
    q, k = rng.standard_normal(D), rng.standard_normal(D)

    def score(m: int, n: int, x=q, y=k, interleaved=False) -> float:
        cos, sin = rope_tables(np.array([m, n]), D, dtype=np.float64)
        qm = apply_rope(x, cos[0], sin[0], interleaved)
        kn = apply_rope(y, cos[1], sin[1], interleaved)
        return float(qm @ kn)

    print(f"   (m, n) = (5, 2): {score(5, 2):+.6f};  (12, 9): {score(12, 9):+.6f};  "
          f"(3, 2): {score(3, 2):+.6f}")
    # The same head's weights in the two layouts: w_hf rows pair (i, i + D/2), w_gguf (2i, 2i+1).
    w_q, w_k = rng.standard_normal((D, 6)), rng.standard_normal((D, 6))
    h = rng.standard_normal(6)
    gq, gk = rotate_half_to_interleaved(w_q, 1), rotate_half_to_interleaved(w_k, 1)
    right = score(5, 2, w_q @ h, w_k @ h)
    same = score(5, 2, interleaved_to_rotate_half(gq, 1) @ h, interleaved_to_rotate_half(gk, 1) @ h)
    wrong = score(5, 2, gq @ h, gk @ h)
    print(f"   GGUF weights, rows permuted: {same:+.6f} (HF: {right:+.6f}); "
          f"not permuted: {wrong:+.6f}  <- wrong, and nothing crashes")


def show_swiglu_and_gqa() -> None:
    C = 96
    I = 8 * C // 3
    print(f"\n3. SwiGLU at C = {C}: gate, up, down of width I = 8C/3 = {I}: {3 * C * I:,} "
          f"weights; GPT-2's c_fc and c_proj of width 4C: {2 * C * 4 * C:,}")
    print("\n4. grouped-query attention: the KV cache per token and layer (float32)")
    for H, Hkv in ((4, 4), (4, 2), (4, 1)):
        print(f"   {H} query heads, {Hkv} key-value heads of 24: {2 * Hkv * 24 * 4} bytes")
    model = Llama(LlamaConfig(vocab_size=50, hidden_size=96, intermediate_size=I,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                              max_position_embeddings=32), rng=0).eval()
    ids = np.random.default_rng(1).integers(0, 50, (1, 12))
    with no_grad():
        full = model(ids)[0].data[0]
    state = model.init_state(1)
    stepped = np.stack([model.step(state, ids[:, t:t + 1])[0] for t in range(12)])
    print(f"   cache keys of the multi-query model: {state.cache.k.shape} (layers, batch, "
          f"Hkv, positions, D); stepping vs forward: max difference "
          f"{np.abs(stepped - full).max():.1e}")


def train_both(args) -> None:
    text = embedded_corpus()[: 20_000 if args.tiny else 400_000]
    tok = CharTokenizer.from_text(text, unk="<unk>")
    data = prepare_data(tok, text=text, val_fraction=0.1)
    V, T = tok.vocab_size, 16 if args.tiny else 64
    C, L, H = (16, 1, 2) if args.tiny else (64, 2, 4)
    steps = 10 if args.tiny else args.steps
    gpt = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C), rng=0)
    # GPT-2's block has 12 C^2 + 13 C weights (matrices, biases, two LayerNorms); Llama's
    # 4 C^2 + 3 C I + 2 C (Hkv = H, no biases, two RMSNorms). With I = 8C/3 the matrices
    # match; what GPT spends on biases, the position table (T C) and ln_f's bias goes to I.
    I = gpt_budget_intermediate_size(C, L, T)
    llama = Llama(LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=I,
                              num_hidden_layers=L, num_attention_heads=H,
                              num_key_value_heads=H, max_position_embeddings=T), rng=0)
    print(f"\n5. training both on the embedded corpus ({len(data.train):,} characters, V = {V}), "
          f"{steps} steps of {4 if args.tiny else 16} x {T}")
    print(f"   ln V = {math.log(V):.2f} nats: the loss of a uniform guess")
    for name, model in (("GPT", gpt), ("Llama", llama)):
        tc = TrainConfig(steps=steps, batch_size=4 if args.tiny else 16, block_size=T, lr=3e-3,
                         min_lr=3e-4, warmup_steps=max(steps // 10, 1), eval_interval=steps,
                         eval_batches=2 if args.tiny else 20, log_interval=steps, seed=0)
        start = time.perf_counter()
        result = train(model, data, tc, log=lambda line: None)
        print(f"   {name:5s} {model.num_parameters():7,} parameters: train loss "
              f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}, validation "
              f"{result.val_losses[-1][1]:.3f}  ({time.perf_counter() - start:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="What Llama changes from GPT-2, shown on numbers, "
                                             "then both trained at the same size.")
    ap.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and data, for the tests")
    args = ap.parse_args(argv)
    # These models' products are small (a (1024 x 64) by (64 x 185) at most): one BLAS thread
    # is as fast, and far faster when another process is busy (see numpylm.blas).
    apply_thread_policy(work=2 * 16 * 64 * 64 * 185)
    show_norms()
    show_rope()
    show_swiglu_and_gqa()
    train_both(args)


if __name__ == "__main__":
    main()
