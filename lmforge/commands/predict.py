"""`lmforge predict`: write a fine-tuned model's predictions for a split (labels not needed)."""
from __future__ import annotations

import argparse

from lmforge.commands.task_flags import add_task_arguments, task_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="a fine-tuned model directory")
    add_task_arguments(parser, task_required=False)
    parser.add_argument("--split", default="test", help="split to predict (default test)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="write predictions.tsv (GLUE layout) or predictions.json (SQuAD) here")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.finetune import predict_dir

    path, count = predict_dir(args.model, task=args.task, data=args.data, split=args.split, out=args.out,
                              tokenizer=args.tokenizer, max_length=args.max_length, batch_size=args.batch_size,
                              device=args.device, task_options=task_options(args), overwrite=args.overwrite)
    print(f"wrote {count} predictions to {path}")
    return 0
