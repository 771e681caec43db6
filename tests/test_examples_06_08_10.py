"""Examples 06 (attention and GPT), 08 (sampling and the KV cache) and 10 (loading GPT-2 weights)
run at tiny settings and print what their docstrings promise.

Parameter counts are checked against GPT-2's count by hand: per block ln_1 (2C), c_attn
(C * 3C + 3C), c_proj (C * C + C), ln_2 (2C), c_fc (C * 4C + 4C), mlp c_proj (4C * C + C),
12 C^2 + 13 C in all; plus wte (V C), wpe (T C) and ln_f (2C); the LM head is wte.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *argv: str, env: dict | None = None, check: bool = True):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *argv], capture_output=True,
                          text=True, timeout=120, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def gpt2_parameters(V: int, T: int, L: int, C: int) -> int:
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1).replace(",", ""))


def check_example_06(out: str) -> None:
    # 1. by hand: the mask hides the 6 scores above the diagonal of a 4 x 4 matrix; row 0 sees
    # only token 0, so its weights are (1, 0, 0, 0).
    masked = out.split("after the causal mask:")[1].split("weights P")[0]
    assert masked.count("-inf") == 6
    weights = out.split("weights P = softmax(rows):")[1].split("output P V")[0]
    assert re.search(r"\[\[1\.\s+0\.\s+0\.\s+0\.\s*\]", weights)
    assert "row sums of P: [1. 1. 1. 1.]" in out
    assert number(r"fused op vs step by step:\s+max difference (\S+)", out) < 1e-12
    assert number(r"composed twin vs step by step: max difference (\S+)", out) < 1e-12
    # 2. the model: 1 layer, C = 16, T = 16 at tiny settings.
    m = re.search(r"(\d+) layers?, (\d+) heads, C = (\d+), T = (\d+), V = (\d+)", out)
    L, _, C, T, V = (int(g) for g in m.groups())
    assert number(r"([\d,]+) parameters;", out) == gpt2_parameters(V, T, L, C)
    # FLOPs per token: 2 per weight of the blocks and the head, plus 4 L T C for attention.
    forward = 2 * (12 * L * C * C + V * C) + 4 * L * T * C
    assert number(r"about ([\d,]+) FLOPs per token forward", out) == forward
    assert number(r"([\d,]+) to train", out) == 3 * forward
    uniform = number(r"ln V = ([\d.]+)", out)
    assert uniform == round(math.log(V), 2)
    first, last = number(r"first loss ([\d.]+)", out), number(r"last loss ([\d.]+)", out)
    assert abs(first - uniform) < 0.3 and last < first
    assert re.search(r"3\. a sample.*\n   'The ", out)
    # 4. one head's weights: rows sum to 1, nothing above the diagonal, and the block rebuilt
    # from all heads' weights matches the block (float32 rounding only).
    assert number(r"rows sum to 1 \(max error (\S+)\)", out) < 1e-5
    assert "largest weight above the diagonal: 0.0" in out
    assert number(r"reproduce its output: max difference (\S+)", out) < 1e-4
    assert "looks most at:" in out


def test_example_06_without_matplotlib(tmp_path):
    """A stand-in `matplotlib` package that fails to import: the example still runs and says
    why there is no heatmap."""
    stub = tmp_path / "stub" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(stub.parent), os.environ.get("PYTHONPATH")]))}
    png = tmp_path / "attention.png"
    out = run("06_attention_gpt.py", "--tiny", "--png", str(png), env=env).stdout
    check_example_06(out)
    assert "no heatmap: plotting needs matplotlib" in out
    assert not png.exists()


def test_example_06_heatmap(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "attention.png"
    out = run("06_attention_gpt.py", "--tiny", "--png", str(png), "--head", "1").stdout
    assert "layer 0, head 1" in out and f"heatmap written to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_example_08(out: str) -> None:
    # 1. entropy of softmax(z / t) rises with t; top-k keeps k; top-p reaches p.
    entropies = [float(e) for e in re.findall(r"temperature [\d.]+: entropy ([\d.]+) bits", out)]
    # (Printed to 0.01 bits, so a nearly uniform model may show equal neighbours.)
    assert len(entropies) == 4 and all(a <= b for a, b in zip(entropies, entropies[1:]))
    assert entropies[0] < entropies[-1]
    assert "top-k 10 keeps 10 tokens" in out
    kept = number(r"top-p 0.9 keeps (\d+) tokens", out)
    assert 1 <= kept and number(r"holding ([\d.]+) of the probability", out) >= 0.9
    # 2. every sample continues the prompt; greedy surprises the model less than t = 1.5.
    samples = dict(re.findall(r"^   (\S.*?)\s+surprise ([\d.]+)  ['\"]The ", out, re.M))
    assert set(samples) == {"greedy (temperature 0)", "temperature 0.8", "temperature 1.5",
                            "top-k 10", "top-p 0.9"}
    assert float(samples["greedy (temperature 0)"]) < float(samples["temperature 1.5"])
    assert ("same seed, same sample: True; seeds 1 and 2 give the same sample: False; "
            "greedy with seeds 1 and 2: True") in out
    assert "streamed tokens equal generate()'s: True" in out
    # 5. With a prompt of P = 4 tokens and n new ones, the uncached run computes
    # P + (P + 1) + ... + (P + n - 1) = nP + n(n - 1)/2 positions and the cached one P + n - 1.
    n = int(number(r"5\. (\d+) tokens with and without", out))
    assert number(r"without cache:.* ([\d,]+) positions", out) == n * 4 + n * (n - 1) // 2
    assert number(r"with    cache:.* ([\d,]+) positions", out) == 4 + n - 1
    assert "same tokens: True" in out
    assert number(r"speed-up with the cache: ([\d.]+)x", out) > 0


def test_example_08_tiny():
    out = run("08_sampling_kv_cache.py", "--tiny").stdout
    assert "training a small character GPT" in out
    # The tiny model's context is 32 tokens: 28 new ones fit after 'The '.
    # Positions without the cache: 28 * 4 + 28 * 27 / 2 = 112 + 378 = 490; with it: 31.
    assert "490 positions computed" in out and "31 positions computed" in out
    check_example_08(out)


def test_example_08_checkpoint(tmp_path):
    """A GPT saved by the training loop is loaded with --checkpoint instead of trained."""
    from numpylm import GPT, CharTokenizer, GPTConfig, TrainConfig, train
    from numpylm.corpus import embedded_corpus
    from numpylm.training import prepare_data

    text = embedded_corpus()[:5_000]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    args = dict(vocab_size=tokenizer.vocab_size, block_size=24, n_layer=1, n_head=2, n_embd=8)
    train(GPT(GPTConfig(**args), rng=0), prepare_data(tokenizer, text=text),
          TrainConfig(steps=2, batch_size=2, block_size=8, warmup_steps=1, eval_interval=2,
                      eval_batches=1, out_dir=str(tmp_path)),
          tokenizer=tokenizer, model_family="gpt", model_args=args, log=lambda line: None)
    out = run("08_sampling_kv_cache.py", "--checkpoint", str(tmp_path)).stdout
    assert f"loaded gpt model from {tmp_path}" in out
    assert "20 tokens with and without" in out  # block_size 24 - 4 prompt tokens
    check_example_08(out)


def test_example_10_demo():
    out = run("10_load_gpt2.py", "--tiny").stdout
    assert "how to get the real GPT-2" in out
    sizes = dict(re.findall(r"^   (\S+\.(?:json|txt|safetensors))\s+([\d,]+) bytes", out, re.M))
    assert sorted(sizes) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert "model_type='gpt2'" in out and "vocab_size=280" in out
    assert "activation_function='gelu_new'" in out
    # Tiny demo: V = 280, T = 64, L = 2, C = 16.
    # 280*16 + 64*16 + 2*(12*256 + 13*16) + 2*16 = 4480 + 1024 + 6560 + 32 = 12,096.
    n = int(number(r"([\d,]+) parameters \(", out))
    assert n == gpt2_parameters(280, 64, 2, 16) == 12_096
    # float32 weights: 4 bytes each, plus the 8-byte length and the JSON header.
    weights = int(sizes["model.safetensors"].replace(",", ""))
    assert 4 * n + 8 < weights < 4 * n + 8 + 10_000
    assert "the loaded tokenizer gives the same ids: True, and decodes them back: True" in out
    assert "logits of the saved and the loaded model: max difference 0.0" in out
    assert "the same from both: True" in out


@pytest.fixture
def gpt2_dir(tmp_path):
    """A small GPT-2-format directory written through the package, as a download would be."""
    from numpylm import GPT, GPT2_PATTERN, BPETokenizer, GPTConfig
    from numpylm.corpus import embedded_corpus

    tokenizer = BPETokenizer.train(embedded_corpus()[:5_000], 270, pattern=GPT2_PATTERN)
    GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2,
                  n_embd=8), rng=0).save_pretrained(tmp_path)
    tokenizer.to_hf(tmp_path)
    return tmp_path, tokenizer


def test_example_10_model_dir(gpt2_dir):
    directory, tokenizer = gpt2_dir
    out = run("10_load_gpt2.py", "--model-dir", str(directory), "--prompt", "x = 1",
              "--tokens", "5").stdout
    # V = 270, T = 32, L = 1, C = 8: 2160 + 256 + (768 + 104) + 16 = 3,304.
    assert f"{gpt2_parameters(270, 32, 1, 8):,} parameters" in out and "3,304 parameters" in out
    assert "1 layers, 2 heads, n_embd 8, context 32, vocabulary 270" in out
    ids = tokenizer.encode("x = 1")
    assert f"'x = 1' is {len(ids)} tokens: {ids}" in out
    assert "5 tokens in" in out


def test_example_10_model_dir_without_tokenizer(gpt2_dir):
    directory, _ = gpt2_dir
    (directory / "vocab.json").unlink()
    (directory / "merges.txt").unlink()
    out = run("10_load_gpt2.py", "--model-dir", str(directory)).stdout
    assert "3,304 parameters" in out and "no vocab.json + merges.txt" in out


def test_example_10_missing_directory(tmp_path):
    proc = run("10_load_gpt2.py", "--model-dir", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode != 0
    assert "nowhere" in proc.stderr and "is not a directory" in proc.stderr
    assert "huggingface" in proc.stderr  # and how to get one


@pytest.mark.parametrize("name, option", [("06_attention_gpt.py", "--png"),
                                          ("08_sampling_kv_cache.py", "--checkpoint"),
                                          ("10_load_gpt2.py", "--model-dir")])
def test_examples_take_help(name, option):
    out = run(name, "--help").stdout
    assert "--tiny" in out and option in out
    if name.startswith("10"):
        assert "config.json" in out and "huggingface.co/gpt2" in out


def test_gpt2_parameters_formula():
    """The hand formula above against GPT-2 small's published size, 124,439,808 parameters
    (V = 50257, T = 1024, L = 12, C = 768), and against the model itself for a small config."""
    from numpylm import GPT

    assert gpt2_parameters(50257, 1024, 12, 768) == 124_439_808
    model = GPT(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=4, rng=0)
    assert model.num_parameters() == gpt2_parameters(11, 5, 2, 4)
    assert np.isfinite(model(np.zeros((1, 5), dtype=np.int64))[0].data).all()
