"""Quality at equal budget: a character-level Llama against the GPT of bench_shakespeare.py on tiny
Shakespeare, same parameter count, steps, batch, learning-rate schedule and seed.

    python benchmarks/bench_llama_shakespeare.py [--steps 2000] [--eval-batches 200]

GPT: bench_shakespeare's recipe (4 layers, 4 heads, width 128, block 64, batch 12, lr 1e-3
with 100 warmup steps and cosine decay to 1e-4, AdamW (0.9, 0.99), weight decay 0.1, clip 1.0).
Llama: 4 layers, 4 heads (4 key-value heads: at this size GQA would only remove weights),
width 128, and an MLP width I chosen so that both models have the same number of parameters
(GPT-2's position table, biases and LayerNorm shifts go into SwiGLU's width). Prints both
validation losses (the mean over `--eval-batches` random validation batches) and wall times.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_shakespeare import DATA, MODEL, recipe
from numpylm.corpus import embedded_corpus
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.llama import Llama, LlamaConfig, gpt_budget_intermediate_size
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import TrainConfig, estimate_loss, prepare_data, train


def llama_config(vocab_size: int) -> LlamaConfig:
    C, L, T = MODEL["n_embd"], MODEL["n_layer"], MODEL["block_size"]
    I = gpt_budget_intermediate_size(C, L, T)  # equal parameter counts
    return LlamaConfig(vocab_size=vocab_size, hidden_size=C, intermediate_size=I,
                       num_hidden_layers=L, num_attention_heads=MODEL["n_head"],
                       num_key_value_heads=MODEL["n_head"], max_position_embeddings=T,
                       rms_norm_eps=1e-5, tie_word_embeddings=True)


def run(name: str, model, data, config: TrainConfig, eval_batches: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    train(model, data, config, log=lambda line: print(f"  {name}: {line}", flush=True))
    seconds = time.perf_counter() - t0
    val = estimate_loss(model, data.val, config.batch_size, config.block_size, eval_batches,
                        seed=2024)
    return val, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-batches", type=int, default=200)
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    path = Path(args.data)
    text = path.read_text(encoding="utf-8") if path.is_file() else embedded_corpus()
    tokenizer = CharTokenizer.from_text(text)
    data = prepare_data(tokenizer, text=text, val_fraction=0.1)
    config = recipe(args.steps)
    V = tokenizer.vocab_size
    gpt = GPT(GPTConfig(vocab_size=V, **MODEL), rng=1337)
    llama = Llama(llama_config(V), rng=1337)
    print(f"data: {path if path.is_file() else 'embedded corpus'}; vocabulary {V}; "
          f"{args.steps} steps of {config.batch_size} x {config.block_size}")
    print(f"GPT {gpt.num_parameters():,} parameters; Llama {llama.num_parameters():,} "
          f"parameters (intermediate_size {llama.config.intermediate_size})")
    results = {name: run(name, model, data, config, args.eval_batches)
               for name, model in (("gpt", gpt), ("llama", llama))}
    print(f"\n{'model':<8}{'val loss':>10}{'wall time':>12}")
    for name, (val, seconds) in results.items():
        print(f"{name:<8}{val:>10.4f}{seconds:>11.1f}s")
    diff = results["llama"][0] - results["gpt"][0]
    print(f"llama - gpt: {diff:+.4f} nats ({'llama' if diff < 0 else 'gpt'} lower)")


if __name__ == "__main__":
    main()
