"""`lmforge serve`: an HTTP API over a saved model (OpenAI-style completions with streaming, embeddings,
fill-mask, classification; a playground page at /). The work is ``lmforge.recipes.serve.serve``."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (lmforge or HF)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--max-batch", type=int, default=16, help="rows decoded together (default 16)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="an idle server waits this long for more requests to batch (default 5)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' (default: $LMFORGE_API_KEY, else no key)")
    parser.add_argument("--max-new-tokens-limit", type=int, default=256,
                        help="the largest max_tokens a request may ask for (default 256)")
    parser.add_argument("--max-input-tokens", type=int, default=None,
                        help="the longest prompt / input in tokens (default: the model's positions)")
    parser.add_argument("--request-timeout", type=float, default=300.0,
                        help="seconds a request may queue + run before it ends with 408 (default 300)")
    parser.add_argument("--max-queue", type=int, default=1024, help="waiting requests beyond this get 503")
    parser.add_argument("--compile", nargs="?", const="auto", default=False, choices=["auto", "all"],
                        help="decode completions through a torch.compile'd step, compiled at start-up: auto = "
                             "where it is faster (on CPU: one row), all = every batch size (docs/serving.md)")
    parser.add_argument("--name", default=None, help="the model id the API reports (default: the directory name)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="server log level (default info)")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.loading import prefer_huge_pages
    prefer_huge_pages()  # before torch loads
    from lmforge.recipes.serve import ServeConfig, serve

    settings = {"max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
                "api_key": args.api_key if args.api_key is not None else os.environ.get("LMFORGE_API_KEY"),
                "max_new_tokens_limit": args.max_new_tokens_limit, "max_input_tokens": args.max_input_tokens,
                "request_timeout": args.request_timeout, "max_queue": args.max_queue, "compile": args.compile}
    if args.compile:
        print(f"lmforge serve: --compile {args.compile}: compiling the decode step before serving", flush=True)
    config = ServeConfig(model=args.model, host=args.host, port=args.port, device=args.device, name=args.name,
                         log_level=args.log_level, settings=settings)
    return serve(config, ready=lambda url: print(f"lmforge serve: {args.model} on {url} (playground {url}/, API "
                                                  f"docs {url}/docs); Ctrl+C or SIGTERM to stop", flush=True))
