"""`lmforge generate`: continue prompts with a causal decoder (greedy, sampling, beam search).

Tokens stream to the terminal as they are made; ``--json`` prints one object per prompt instead:
{"prompt", "completion", "tokens", "stopped"}. The decode loop is ``lmforge.recipes.completion.complete``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_decoding_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int | None = 50,
                           model_required: bool = True) -> None:
    """The decoding flags `generate` and `prompt` share (``prompt``: a template's settings are the defaults)."""
    tmpl, length = ("", max_new_tokens) if max_new_tokens else (", or the template's", "the template's")
    parser.add_argument("--model", required=model_required, metavar="DIR",
                        help="checkpoint directory (lmforge or HF gpt2 / openai-gpt)"
                             + ("" if model_required else "; required unless --list"))
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"tokens to generate per prompt (default {length})")
    parser.add_argument("--do-sample", action="store_true",
                        help="sample instead of greedy decoding (implied by --temperature / --top-k / --top-p)")
    parser.add_argument("--greedy", action="store_true", help="force greedy decoding")
    parser.add_argument("--temperature", type=float, help=f"sampling temperature > 0 (default 1{tmpl})")
    parser.add_argument("--top-k", type=int, help=f"sample among the k most likely tokens (default 0 = all{tmpl})")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (default 1 = off)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1 = no beam search)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL repetition penalty (1 = off)")
    parser.add_argument("--stop", action="append", default=None, metavar="TEXT",
                        help=f"end a completion at this string (repeatable; default: none{tmpl})")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling: the same seed gives the same "
                        "text (default: none, a new draw each run)")
    parser.add_argument("--truncate-prompt", action="store_true",
                        help="keep the last tokens of a prompt longer than the context instead of failing")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object per prompt: {"prompt", "completion", "tokens", "stopped"}')
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--compile", nargs="?", const="compile", default=None, choices=["compile", "graph"],
                        metavar="MODE", help="decode with a static KV cache and a fixed-shape step: torch.compile'd "
                        "and, on GPU, replayed as a CUDA graph (plain --compile), or 'graph' (the eager step as a "
                        "CUDA graph, GPU only); same tokens as without it (default: off, eager decoding)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="prompt text (repeat for several prompts; '-' reads stdin)")
    add_decoding_arguments(parser)


def decoding_options(args: argparse.Namespace, *, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """generate() keyword arguments from the shared flags; ``defaults`` (a template's) fill unset ones."""
    defaults = defaults or {}
    sampling_flag = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    do_sample = (args.do_sample or sampling_flag or defaults.get("do_sample", False)) and not args.greedy
    return {
        "max_new_tokens": args.max_new_tokens if args.max_new_tokens is not None else defaults.get("max_new_tokens", 50),
        "do_sample": bool(do_sample),
        "temperature": args.temperature if args.temperature is not None else defaults.get("temperature", 1.0),
        "top_k": args.top_k if args.top_k is not None else defaults.get("top_k", 0),
        "top_p": args.top_p if args.top_p is not None else 1.0,
        "num_beams": args.num_beams,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "truncate_prompt": args.truncate_prompt,
        "compile": args.compile or False,
    }


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.loading import load_model_and_tokenizer, prefer_huge_pages
    prefer_huge_pages()  # before torch loads
    from lmforge.recipes.completion import complete
    from lmforge.train.distributed import resolve_device

    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompt]
    options = decoding_options(args)
    model, tokenizer = load_model_and_tokenizer(args.model, resolve_device(args.device))
    complete(model, tokenizer, prompts, options, stop=args.stop or [], stream=True, json_out=args.json)
    return 0
