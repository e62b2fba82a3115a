"""`lmforge distill`: train a smaller student from a teacher on prepared shards (distilbert | tinybert | logits).
The pipeline is ``lmforge.recipes.distill``; the formulas are in docs/distillation.md."""
from __future__ import annotations

import argparse

from lmforge.commands.common import add_training_flags, interactive

DEFAULTS = {"max_steps": 1000, "batch_size": 32, "lr": 5e-4, "warmup": 0.05, "weight_decay": 0.01,
            "precision": "auto", "seed": 0, "save_every": None, "device": None}
TRAIN_KEYS = ("max_steps", "batch_size", "lr", "weight_decay", "precision", "seed", "save_every", "progress",
              "seq_len", "log_every", "eval_every", "keep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--teacher", required=True, metavar="DIR", help="the trained teacher (lmforge or HF directory, mlm / clm head)")
    a("--data", default=None, metavar="SHARDS", help="shards `lmforge prepare` made with the teacher's tokenizer "
      "(required but with --task)")
    a("--out", required=True, metavar="DIR", help="the output directory (the student model)")
    a("--student", default=None, help="preset, ModelConfig .yaml/.json or model dir (default: the teacher with "
      "half its layers; a BERT teacher gives a DistilBERT student)")
    a("--recipe", default="distilbert", choices=["distilbert", "tinybert", "logits"], help="the loss")
    a("--student-layers", type=int, default=None, help="the student's depth (default: the preset's / half)")
    a("--layer-map", default=None, metavar="I,J,...", help="teacher layer of each student layer (default: evenly "
      "spaced, first and last kept: 0,2,4,7,9,11 for 12 -> 6)")
    a("--student-init", default="auto", choices=["auto", "teacher", "random"],
      help="auto: from the teacher's layers when the widths match (not for tinybert)")
    a("--temperature", type=float, default=None, help="softmax temperature of the KL term (default 2.0)")
    a("--alpha-ce", type=float, default=None, help="weight of T^2 KL(teacher || student) (default 5.0)")
    a("--alpha-mlm", type=float, default=None, help="weight of the hard MLM / CLM loss (default 2.0)")
    a("--alpha-cos", type=float, default=None, help="weight of the cosine loss (default 1.0 for distilbert, else 0)")
    a("--ce-positions", default="masked", choices=["masked", "all"], help="KL rows: masked tokens or all real tokens")
    a("--mask-prob", type=float, default=None, help="MLM masking rate (default 0.15)")
    a("--cache-topk", type=int, default=None, metavar="K", help="logits recipe, causal teacher: store its top-K "
      "logits per position once (OUT/teacher-topk) instead of running it every step (default: run it)")
    a("--task", default=None, help="tinybert task distillation on this task (a fine-tuned --teacher, the general "
      "student as --student): stage 1 intermediate layers, stage 2 prediction layer (default: none, general "
      "distillation on --data)")
    a("--task-data", default=None, metavar="DIR", help="the task's data directory (required with --task)")
    a("--task-epochs", type=float, default=10.0, help="task stage 1 epochs")
    a("--pred-epochs", type=float, default=3.0, help="task stage 2 epochs")
    a("--seq-len", type=int, default=128, help="tokens per sequence (the task's max length with --task)")
    a("--log-every", type=int, default=10, help="metrics.jsonl record every N steps")
    a("--eval-every", type=int, default=None, help="validation every N steps (default: at the end only)")
    a("--val-batches", type=int, default=20, help="validation batches per evaluation (0 = off)")
    a("--keep", type=int, default=3, help="keep the last K checkpoints")
    add_training_flags(parser, DEFAULTS, said={})


def run(args: argparse.Namespace) -> int:
    from lmforge.errors import ConfigError
    from lmforge.recipes.distill import DistillConfig, distill
    from lmforge.train import TrainConfig

    given = vars(args)
    train = {k: given[k] for k in TRAIN_KEYS}
    train["progress"] = train["progress"] and interactive()
    warmup = given["warmup"]
    train |= {"warmup_steps": int(warmup)} if warmup >= 1 else {"warmup_ratio": warmup}  # pretrain's --warmup rule
    try:
        layer_map = [int(i) for i in args.layer_map.split(",")] if args.layer_map else None
    except ValueError:
        raise ConfigError(f"--layer-map takes comma-separated layer numbers (0,2,4), got {args.layer_map!r}") from None
    config = DistillConfig(
        teacher=args.teacher, data=args.data, out=args.out, student=args.student, recipe=args.recipe,
        student_layers=args.student_layers, layer_map=layer_map, student_init=args.student_init,
        temperature=args.temperature, alpha_ce=args.alpha_ce, alpha_mlm=args.alpha_mlm, alpha_cos=args.alpha_cos,
        ce_positions=args.ce_positions, mask_prob=args.mask_prob, val_batches=args.val_batches, device=args.device,
        cache_topk=args.cache_topk, task=args.task, task_data=args.task_data, task_epochs=args.task_epochs, pred_epochs=args.pred_epochs,
        resume=args.resume, overwrite=args.overwrite, allow_changes=args.allow_changes,
        train=TrainConfig.from_dict(train))
    distill(config)
    return 0
