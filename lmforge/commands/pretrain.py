"""`lmforge pretrain`: pre-train a model on prepared shards with clm / mlm / mlm+nsp / mlm+sop / rtd (ELECTRA).

Options resolve in three layers: TrainConfig defaults < a YAML file (``--config``) < flags given on
the command line. ``--dry-run`` prints the resolved configuration and exits. Runs unchanged under
``torchrun --nproc_per_node N``. The pipeline is ``lmforge.recipes.pretrain``.
"""
from __future__ import annotations

import argparse

from lmforge.commands.common import add_training_flags, interactive

_S = argparse.SUPPRESS  # "not given": only flags the user typed override the YAML file
# the defaults --help states (TrainConfig's, and resolve_config's 1000 steps; tests check they agree)
DEFAULTS = {"max_steps": 1000, "batch_size": 32, "lr": 1e-4, "warmup": 0, "weight_decay": 0.01, "precision": "auto",
            "seed": 0, "save_every": None, "device": None}
SAID = {"max_steps": "1000, unless --tokens or --time-budget"}
USAGE = ("%(prog)s --model MODEL --data SHARDS --out DIR [options]\n"
         "       %(prog)s --config RUN.yaml [options]   (--model, --data, --out in the file or as flags)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a, parser.usage = parser.add_argument, USAGE
    req = "required, here or in the --config file: "
    a("--model", default=_S, help=req + "a preset name (lmforge presets), a ModelConfig .yaml/.json, or a model dir")
    a("--data", default=_S, metavar="SHARDS", help=req + "the shard directory `lmforge prepare` wrote")
    a("--out", default=_S, metavar="DIR", help=req + "the output directory")
    a("--objective", default=_S, help="clm | mlm | mlm+nsp | mlm+sop | rtd (= electra) (default mlm)")
    a("--recipe", default=_S, choices=["budget", "budget-hf"], help="Cramming's small-budget settings (default none)")
    a("--config", default=None, metavar="RUN.yaml", help="YAML file of options (keys as the long flags, with _); "
      "flags override it (default: none)")
    a("--tokenizer", default=_S, help="check the shards were made with this tokenizer dir (default: no check)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--tokens", type=float, default=_S, help="training tokens, e.g. 2e6 (default: --max-steps decides)")
    a("--time-budget", default=_S, metavar="T", help="wall-clock budget (20m, 90s, 1.5h) (default: none)")
    add_training_flags(parser, DEFAULTS, said=SAID, suppress=True, groups={"max_steps": length})
    a("--global-batch-size", type=int, default=_S, help="sequences per optimizer step (gradient accumulation; "
      "default --batch-size x processes)")
    a("--global-batch-tokens", type=int, default=_S, help="tokens per optimizer step (gradient accumulation; "
      "default: --global-batch-size decides)")
    a("--seq-len", type=int, default=_S, help="tokens per sequence (default 128)")
    a("--schedule", default=_S, choices=["linear", "cosine", "constant", "triangle"],
      help="decay after warmup (default linear)")
    a("--optimizer", default=_S, choices=["adamw", "lamb"], help="(default adamw)")
    a("--max-grad-norm", type=float, default=_S, help="gradient clipping norm (0 = off; default 1.0)")
    a("--keep", type=int, default=_S, help="keep the last K checkpoints (default 3)")
    a("--log-every", type=int, default=_S, help="metrics.jsonl record every N steps (default 10)")
    a("--eval-every", type=int, default=_S, help="validation every N steps (default: at the end only)")
    a("--val-batches", type=int, default=_S, help="validation batches per evaluation (default 20; 0 = off)")
    a("--compile", action="store_true", default=_S, help="torch.compile the model")
    a("--grad-checkpointing", action="store_true", default=_S, help="recompute activations (less memory)")
    a("--distributed", default=_S, choices=["ddp", "fsdp"], help="under torchrun: ddp replicates, fsdp shards the "
      "model and writes sharded checkpoints that resume on another number of processes; CPU or GPU (default ddp)")
    a("--on-nan", default=_S, choices=["stop", "skip"], help="a NaN / inf loss stops the run or skips that step's "
      "update, naming the step (default stop)")
    a("--mask-prob", type=float, default=_S, help="MLM: fraction of tokens to predict (default 0.15)")
    a("--masking", default=_S, choices=["static", "dynamic"], help="MLM masks: static (BERT) or dynamic "
      "(RoBERTa) (default: static for mlm+nsp / mlm+sop, dynamic for mlm)")
    a("--whole-word", action=argparse.BooleanOptionalAction, default=_S, help="MLM: mask whole words (default: on "
      "for mlm+sop, as ALBERT; off otherwise)")
    a("--ngram", type=int, default=_S, help="MLM: mask spans of up to N words, p(n) ~ 1/n (ALBERT) (default 3 for "
      "mlm+sop, 1 otherwise)")
    a("--dupe-factor", type=int, default=_S, help="static masking: masked copies of the data (default 10)")
    a("--generator-size", type=float, default=_S, help="rtd: generator hidden size / the model's (default 0.25; base 1/3)")
    a("--disc-weight", type=float, default=_S, help="rtd: weight of the discriminator loss (default 50)")
    a("--tensorboard", action="store_true", default=_S, help="also log to TensorBoard (when installed)")
    a("--dry-run", action="store_true", default=False, help="print the resolved configuration and exit")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.pretrain import pretrain, resolve_config

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "dry_run")}
    config = resolve_config(given, args.config)
    config.dry_run = args.dry_run
    if not args.dry_run:
        config.train.progress = config.train.progress and interactive()
    pretrain(config)
    return 0
