"""MLM vs RTD (ELECTRA) at equal pre-training compute on the toy language, one command.

    python benchmarks/electra_vs_mlm.py [--out runs/equal-compute] [--fast]

Pre-trains the same tiny encoder with `mlm` and with `rtd` at three FLOP budgets (FLOPs counted with
torch's FlopCounterMode, generator + discriminator for rtd), fine-tunes each on the toy acceptability
task with 3 seeds (and once more from scratch) and writes results.md (the table), results.json and
equal_compute.png into --out. ~25 minutes on 2 busy CPU cores; --fast runs a toy version in seconds.
Running it again continues after the last finished run. The library function is
``lmforge.recipes.equal_compute.equal_compute``; the results are discussed in docs/pretraining.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/equal-compute"), help="output directory")
    ap.add_argument("--fast", action="store_true", help="tiny sizes: the whole pipeline in seconds (numbers mean nothing)")
    args = ap.parse_args()
    from lmforge.recipes.equal_compute import equal_compute

    summary = equal_compute(args.out, fast=args.fast)
    print(f"\n{summary['machine']}; {summary['total_minutes']} minutes; {args.out / 'results.md'}, "
          f"{args.out / 'equal_compute.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
