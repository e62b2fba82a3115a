"""`lmforge generate`: continue prompts with a causal decoder (greedy, sampling, beam search).

Tokens stream to the terminal as they are made; ``--json`` prints one object per prompt instead:
{"prompt", "completion", "tokens", "stopped"}.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any


def add_decoding_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int | None = 50,
                           model_required: bool = True) -> None:
    """The decoding flags `generate` and `prompt` share."""
    parser.add_argument("--model", required=model_required,
                        help="checkpoint directory (lmforge or HF gpt2 / openai-gpt)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help="tokens to generate per prompt" + (f" (default {max_new_tokens})" if max_new_tokens else
                                                                " (default: the template's)"))
    parser.add_argument("--do-sample", action="store_true",
                        help="sample instead of greedy decoding (implied by --temperature / --top-k / --top-p)")
    parser.add_argument("--greedy", action="store_true", help="force greedy decoding")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature > 0 (default 1)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (1 = off)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (1 = no beam search)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL repetition penalty (1 = off)")
    parser.add_argument("--stop", action="append", default=None, metavar="TEXT",
                        help="end a completion at this string (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed -> same text)")
    parser.add_argument("--truncate-prompt", action="store_true",
                        help="keep the last tokens of a prompt longer than the context instead of failing")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object per prompt: {"prompt", "completion", "tokens", "stopped"}')
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--compile", nargs="?", const="compile", default=None, choices=["compile", "graph"],
                        metavar="MODE", help="decode with a static KV cache and a fixed-shape step: torch.compile'd "
                        "and, on GPU, replayed as a CUDA graph (plain --compile), or 'graph' (the eager step as a "
                        "CUDA graph, GPU only); same tokens as without it")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="prompt text (repeat for several prompts; '-' reads stdin)")
    add_decoding_arguments(parser)


def load_model_and_tokenizer(path: str, device: Any = None) -> tuple[Any, Any]:
    """Model (on ``device`` when given) + tokenizer of a checkpoint directory, with clear errors for what is
    missing."""
    from lmforge.errors import CheckpointError
    from lmforge.models.model import Model
    from lmforge.tokenization.tokenizer import Tokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist.")
    model = Model.from_pretrained(directory)
    try:
        tokenizer = Tokenizer.from_pretrained(directory)
    except Exception as err:  # the tokenizer module raises TokenizerError; name the directory either way
        raise CheckpointError(f"{directory} has no usable tokenizer ({err}); save the tokenizer next to the "
                              "model (tokenizer.save_pretrained(DIR)).") from err
    from lmforge.tokenization import check_model_vocab

    check_model_vocab(model.config.vocab_size, tokenizer)  # ids past the embeddings: say resize, not crash later
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


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


def complete(model: Any, tokenizer: Any, prompts: list[str], options: dict[str, Any], *,
             stop: list[str], stream: bool, json_out: bool, echo_prompt: bool = True) -> list[dict[str, Any]]:
    """Generate for every prompt; stream to stdout or print JSON lines. Returns the records."""
    from lmforge.generation import (TextStreamer, check_prompt_length, check_sampling_args, encode_prompts, generate,
                                    lm_field)
    from lmforge.prompting.templates import cut_at_stop

    # fail before anything is printed (the prompt is echoed when streaming)
    lm_field(model)
    check_sampling_args(**{k: options[k] for k in ("do_sample", "temperature", "top_k", "top_p", "num_beams",
                                                    "repetition_penalty", "max_new_tokens")})

    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    records = []
    # streaming shows one prompt at a time; --json batches every prompt (left padding)
    batches = [[p] for p in prompts] if stream and not json_out else [prompts]
    for batch in batches:
        ids, mask = encode_prompts(tokenizer, batch, pad_id=pad)
        if not options["truncate_prompt"]:
            check_prompt_length(ids.shape[1], int(model.config.max_positions))
        streamer = None
        if stream and not json_out and options["num_beams"] == 1:
            if echo_prompt:
                sys.stdout.write(batch[0])
            streamer = TextStreamer(tokenizer, _write, stop=stop)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = generate(model, ids, attention_mask=mask, eos_token_id=eos, pad_token_id=pad,
                           stop=stop or None, tokenizer=tokenizer, streamer=streamer, return_scores=True,
                           **options)
        for w in caught:
            print(f"lmforge: note: {w.message}", file=sys.stderr)
        for row, prompt in enumerate(batch):
            tokens = out.tokens[row].tolist()
            n = len(tokens)
            while n and out.stopped[row] in ("eos", "stop") and tokens[n - 1] == pad and pad != eos:
                n -= 1
            tokens = tokens[:n]
            if out.stopped[row] == "eos" and tokens and tokens[-1] == eos:
                tokens = tokens[:-1]  # the eos token ends the text; it is not part of it
            completion = cut_at_stop(tokenizer.decode(tokens), stop)
            record = {"prompt": prompt, "completion": completion, "tokens": tokens, "stopped": out.stopped[row]}
            records.append(record)
            if json_out:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            elif streamer is not None:
                sys.stdout.write("\n")
                sys.stdout.flush()
            else:
                print((prompt if echo_prompt else "") + completion, flush=True)
    return records


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompt]
    from lmforge.train.distributed import resolve_device

    options = decoding_options(args)
    model, tokenizer = load_model_and_tokenizer(args.model, resolve_device(args.device))
    complete(model, tokenizer, prompts, options, stop=args.stop or [], stream=True, json_out=args.json)
    return 0
