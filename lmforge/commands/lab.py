"""`lmforge lab [NAME]`: the pre-training literature's claims as runnable experiments. Without NAME it lists
them; with NAME it runs one, prints its table and writes results.json, NAME.png and report.md into --out."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="the experiment to run (omit to list them)")
    parser.add_argument("--fast", action="store_true", help="a tiny version in under a minute (numbers not meaningful)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default lab-out/NAME)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds for the noisy experiments (default: the experiment's own)")


def run(args: argparse.Namespace) -> int:
    from lmforge.lab import list_experiments, run_experiment

    if args.name is None:
        print(list_experiments())
        return 0
    from lmforge.train.distributed import refuse_under_torchrun

    refuse_under_torchrun("lab")
    run_experiment(args.name, args.out or f"lab-out/{args.name}", fast=args.fast, seeds=args.seeds)
    return 0
