"""`lmforge fewshot`: GPT-3 style k-shot in-context evaluation (no weight updates).

Prints the score-vs-k table and writes results.json, table.txt, fewshot.png, prompts.txt (a sample of
the prompts) and predictions.jsonl (per example and k) to --out.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory of a causal LM (clm head)")
    parser.add_argument("--task", required=True, help="glue-sst2 | glue-rte | swag | squad | squad-v2")
    parser.add_argument("--data", required=True, help="the task's data directory (or the evaluated file)")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 4, 8], help="values of k (default 0 1 4 8)")
    parser.add_argument("--split", default=None, help="evaluated split (default: dev; swag: val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demonstration draw (default 0)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length for generative tasks")
    parser.add_argument("--out", default=None, help="output directory (default fewshot-TASK)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.distributed import resolve_device
    from lmforge.prompting.fewshot import fewshot_evaluate, write_outputs
    from lmforge.recipes.outputs import check_out_dir

    out = check_out_dir(args.out or f"fewshot-{args.task}", overwrite=args.overwrite)
    model, tokenizer = load_model_and_tokenizer(args.model, resolve_device(args.device))
    result = fewshot_evaluate(model, tokenizer, args.task, args.data, shots=args.shots, seed=args.seed,
                              split=args.split, limit=args.limit, max_new_tokens=args.max_new_tokens,
                              progress=lambda line: print(line, file=sys.stderr, flush=True))
    files = write_outputs(result, out)
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0
