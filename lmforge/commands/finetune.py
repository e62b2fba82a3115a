"""`lmforge finetune`: fine-tune a model on a task and write the model, metrics and predictions."""
from __future__ import annotations

import argparse


def add_task_arguments(parser: argparse.ArgumentParser, *, task_required: bool = True) -> None:
    """Flags shared by finetune / evaluate / predict: which task, which data, how to read it."""
    parser.add_argument("--task", required=task_required, metavar="NAME",
                        help="glue-cola, glue-sst2, glue-mrpc, glue-qqp, glue-stsb, glue-mnli, glue-qnli, glue-rte, "
                             "glue-wnli, squad, squad-v2, swag, pos, ner, text"
                             + ("" if task_required else " (default: the task the model was fine-tuned on)"))
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="directory with the task's split files (train.tsv, dev.tsv, ...) or one file")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (needed when --model is a preset)")
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="tokens per input; longer inputs are truncated and counted (default 128, SQuAD 384)")
    parser.add_argument("--text-column", metavar="NAME", help="--task text: the column holding the text")
    parser.add_argument("--text-pair-column", metavar="NAME", help="--task text: the column of the second text")
    parser.add_argument("--label-column", metavar="NAME", help="--task text: the column holding the label")
    parser.add_argument("--doc-stride", type=int, metavar="N",
                        help="SQuAD: tokens shared by consecutive windows of a long context (default 128)")


def task_options(args: argparse.Namespace) -> dict:
    names = {"text_column": "text_column", "text_pair_column": "pair_column", "label_column": "label_column",
             "doc_stride": "doc_stride"}
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag, None) is not None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_PRESET",
                        help="a checkpoint directory (lmforge or HF) or a preset name (with --tokenizer)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_task_arguments(parser)
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the same architecture from random weights (the no-pre-training baseline)")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the training split (default 3)")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of the body (default 2e-5)")
    parser.add_argument("--head-lr", type=float, default=None, help="peak learning rate of the new head (default --lr)")
    parser.add_argument("--layer-decay", type=float, default=1.0,
                        help="layer-wise lr decay: layer i of L gets lr*decay^(L-i) (default 1 = off)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps warming up (default 0.1)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping: stop after N epochs without improvement (default off)")
    parser.add_argument("--lm-weight", type=float, default=0.5,
                        help="decoders (GPT-1 style): weight of the auxiliary LM loss (default 0.5)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="S",
                       help="run once per seed (in OUT/seed-S) and report mean +- std")
    parser.add_argument("--train-split", default="train", help="split to train on (default train)")
    parser.add_argument("--eval-split", default=None, help="split to evaluate each epoch (default: the task's dev)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (Ctrl-C leaves "
                        "a checkpoint); a finished run is left as it is")
    parser.add_argument("--allow-changes", action="store_true",
                        help="with --resume: accept settings that differ from the saved run's (else refused)")
    parser.add_argument("--overwrite", action="store_true", help="start over in a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from lmforge.recipes.finetune import FinetuneConfig, finetune, finetune_seeds, format_scores

    names = {f.name for f in fields(FinetuneConfig)} - {"task_options"}  # the flags are named as the fields
    config = FinetuneConfig(**{k: v for k, v in vars(args).items() if k in names}, task_options=task_options(args))
    if args.seeds:
        scores = finetune_seeds(config, args.seeds)
        print(f"{args.task} over seeds {' '.join(map(str, args.seeds))}: {format_scores(scores)}")
    else:
        scores = finetune(config)
        print(f"{args.task}: {format_scores(scores)}")
    print(f"outputs in {args.out}")
    return 0
