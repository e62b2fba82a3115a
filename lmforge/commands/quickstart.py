"""`lmforge quickstart`: toy data -> tokenizer -> pre-train BERT + GPT -> fine-tune / few-shot -> report."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="quickstart-out", metavar="DIR",
                        help="output directory (default quickstart-out, in the current directory); must be empty "
                             "unless --overwrite, "
                             "or an unfinished quickstart run of the same flags, which is continued")
    parser.add_argument("--fast", action="store_true",
                        help="a small run (under 2 minutes) that exercises every stage; numbers are not meaningful")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove a previous quickstart's outputs in --out (other files there are left alone)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads for every stage (default: the cores no other process keeps busy, "
                             "measured before each stage)")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.quickstart import quickstart
    from lmforge.train.distributed import refuse_under_torchrun

    refuse_under_torchrun("quickstart")
    quickstart(args.out, fast=args.fast, overwrite=args.overwrite, threads=args.threads)
    return 0
