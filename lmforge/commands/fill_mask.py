"""`lmforge fill-mask`: the top-k tokens (with probabilities) for each mask token of a text."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help='text(s) with mask tokens, e.g. "the man went to the [MASK]."')
    parser.add_argument("--model", required=True, help="checkpoint directory of a masked language model")
    parser.add_argument("--top-k", type=int, default=5, help="candidates per mask (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per text")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.prompting.fill_mask import fill_mask

    model, tokenizer = load_model_and_tokenizer(args.model)
    for text in args.text:
        masks = fill_mask(model, tokenizer, text, top_k=args.top_k)
        if args.json:
            print(json.dumps({"text": text, "masks": masks}, ensure_ascii=False))
            continue
        print(text)
        for m, candidates in enumerate(masks, 1):
            label = f"mask {m}" if len(masks) > 1 else "mask"
            for rank, c in enumerate(candidates, 1):
                print(f"  {label} #{rank}: {c['token']:<15s} {c['score']:.4f}   {c['sequence']}")
    return 0
