"""`lmforge finetune`: fine-tune a model on a task and write the model, metrics and predictions."""
from __future__ import annotations

import argparse

from lmforge.commands.task_flags import add_task_arguments, task_options


# the defaults --help states: FinetuneConfig's (tests check they agree)
DEFAULTS = {"max_steps": None, "batch_size": 32, "lr": None, "warmup": 0.1, "weight_decay": 0.01, "precision": "auto",
            "seed": 0, "save_every": None, "device": None}
SAID = {"max_steps": "none: --epochs decides",
        "lr": "by the body's width: 2e-5 x (768 / hidden size)^1.5 within 1e-5..3e-4, 2.9e-4 for bert-tiny"}
# FinetuneConfig fields, on by default
SPEEDUPS = ("group-by-length", "padding-free", "feature-cache", "cls-only", "sparse-rows")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lmforge.commands.common import Renamed, add_training_flags

    parser.add_argument("--model", required=True, metavar="DIR_OR_PRESET",
                        help="a checkpoint directory (lmforge or HF) or a preset name (with --tokenizer)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_task_arguments(parser)
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the same architecture from random weights (the no-pre-training baseline)")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the training split (default 3)")
    seeds = parser.add_mutually_exclusive_group()
    add_training_flags(parser, DEFAULTS, said=SAID, groups={"seed": seeds})
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="S",
                       help="run once per seed (in OUT/seed-S) and report mean +- std (default: one run, --seed)")
    parser.add_argument("--warmup-ratio", type=float, action=Renamed, new="--warmup", dest="warmup")
    parser.add_argument("--head-lr", type=float, default=None, help="peak learning rate of the new head (default --lr)")
    parser.add_argument("--layer-lr-decay", type=float, default=1.0,
                        help="layer-wise lr decay: layer i of L gets lr*decay^(L-i) (default 1 = off)")
    parser.add_argument("--layer-decay", type=float, action=Renamed, new="--layer-lr-decay", dest="layer_lr_decay")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping: stop after N epochs without improvement (default off)")
    parser.add_argument("--lm-weight", type=float, default=0.5,
                        help="decoders (GPT-1 style): weight of the auxiliary LM loss (default 0.5)")
    parser.add_argument("--train-split", default="train", help="split to train on (default train)")
    parser.add_argument("--eval-split", default=None, help="split to evaluate each epoch (default: the task's dev)")
    parser.add_argument("--disable", nargs="+", default=[], choices=SPEEDUPS, metavar="SPEEDUP",
                        help=f"switch speed-ups off (to compare): {', '.join(SPEEDUPS)} (default: all on)")


def run(args: argparse.Namespace) -> int:
    from lmforge.commands.common import interactive
    from lmforge.recipes.finetune import FinetuneConfig, finetune, finetune_seeds, format_scores
    from lmforge.train.distributed import is_rank_zero

    same = ("model", "task", "data", "out", "tokenizer", "from_scratch", "epochs", "lr", "head_lr", "layer_lr_decay",
            "warmup", "weight_decay", "batch_size", "eval_batch_size", "max_length", "seed", "patience", "lm_weight",
            "train_split", "eval_split", "device", "max_steps", "precision", "save_every", "resume",
            "allow_changes", "overwrite")
    config = FinetuneConfig(**{k: getattr(args, k) for k in same}, progress=args.progress and interactive(),
                            task_options=task_options(args),
                            **{name.replace("-", "_"): name not in args.disable for name in SPEEDUPS})
    scores = finetune_seeds(config, args.seeds) if args.seeds else finetune(config)
    if is_rank_zero():  # under torchrun: the scores once, not once per process
        over = f" over seeds {' '.join(map(str, args.seeds))}" if args.seeds else ""
        print(f"{args.task}{over}: {format_scores(scores)}\noutputs in {args.out}")
    return 0
