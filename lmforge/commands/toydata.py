"""`lmforge toydata`: write the toy-language corpus and its downstream tasks (official formats)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write (created if missing)")
    parser.add_argument("--docs", type=int, default=8000,
                        help="documents (stories) in the pre-training corpus (default 8000, about 3 MB)")
    parser.add_argument("--examples", type=int, default=1000,
                        help="training examples per task; dev and test get half as many each (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from lmforge.data.toyland import generate
    from lmforge.recipes.outputs import check_out_dir

    check_out_dir(args.out, overwrite=args.overwrite)
    files = generate(args.out, docs=args.docs, examples=args.examples, seed=args.seed)
    print(f"wrote {args.out} (seed {args.seed})")
    width = max(len(str(f.path)) for f in files)
    for f in files:
        print(f"  {str(f.path):{width}s}  {f.count:>8,} {f.unit:10s} {f.mb:7.2f} MB")
    print(f"  total {sum(f.mb for f in files):.2f} MB")
    return 0
