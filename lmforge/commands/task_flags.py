"""The flags finetune / evaluate / predict share: which task, which data, how to read it. Not a command
itself (cli.COMMANDS does not list it)."""
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
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="tokenizer directory, needed when --model is a preset (default: the model directory's)")
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="tokens per input; longer inputs are truncated and counted (default 128, SQuAD 384)")
    parser.add_argument("--text-column", metavar="NAME", help="--task text: the column holding the text (default text)")
    parser.add_argument("--text-pair-column", metavar="NAME",
                        help="--task text: the column of the second text (default: none, single texts)")
    parser.add_argument("--label-column", metavar="NAME",
                        help="--task text: the column holding the label (default label)")
    parser.add_argument("--doc-stride", type=int, metavar="N",
                        help="SQuAD: tokens shared by consecutive windows of a long context (default 128)")


def task_options(args: argparse.Namespace) -> dict:
    names = {"text_column": "text_column", "text_pair_column": "pair_column", "label_column": "label_column",
             "doc_stride": "doc_stride"}
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag, None) is not None}


__all__ = ["add_task_arguments", "task_options"]
