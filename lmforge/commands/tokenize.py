"""`lmforge tokenize`: print the tokens and ids a tokenizer gives for a text (or a pair)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to tokenize")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="tokenizer directory (lmforge or HF: tokenizer.json, vocab.txt, vocab.json + merges.txt)")
    parser.add_argument("--pair", default=None, metavar="TEXT", help="a second text (sentence pair; default: none)")
    parser.add_argument("--family", default=None, choices=("bert", "gpt2", "roberta", "albert"),
                        help="force the family, e.g. roberta for GPT-2's vocab.json + merges.txt (default: from "
                             "the files)")
    parser.add_argument("--no-special-tokens", action="store_true", help="do not add [CLS] / [SEP] / <s> ...")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer, family=args.family)
    enc = tok(args.text, args.pair, add_special_tokens=not args.no_special_tokens, return_offsets_mapping=True,
              return_token_type_ids=True)
    tokens = enc.tokens()
    if args.json:
        print(json.dumps({"tokens": tokens, "input_ids": enc["input_ids"],
                          "token_type_ids": enc["token_type_ids"],
                          "offsets": [list(o) for o in enc["offset_mapping"]]}, ensure_ascii=False))
        return 0
    print(f"{len(tokens)} tokens ({tok.family}, {tok.kind}, vocabulary {len(tok):,})")
    width = max([len(t) for t in tokens] + [5])
    print(f"{'token':<{width}}  {'id':>6}  type  offsets")
    for t, i, ty, (a, b) in zip(tokens, enc["input_ids"], enc["token_type_ids"], enc["offset_mapping"]):
        print(f"{t:<{width}}  {i:>6}  {ty:>4}  {a}-{b}")
    print("ids:", " ".join(map(str, enc["input_ids"])))
    return 0
