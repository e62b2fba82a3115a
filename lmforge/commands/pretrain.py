"""`lmforge pretrain`: pre-train a model on prepared shards with clm / mlm / mlm+nsp / mlm+sop / rtd (ELECTRA).

Options resolve in three layers: TrainConfig defaults < a YAML file (``--config``) < flags given on
the command line. ``--dry-run`` prints the resolved configuration and exits. Runs unchanged under
``torchrun --nproc_per_node N``. The pipeline is ``lmforge.recipes.pretrain``.
"""
from __future__ import annotations

import argparse

_S = argparse.SUPPRESS  # "not given": only flags the user typed override the YAML file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default=_S, help="preset name (lmforge presets), a ModelConfig .yaml/.json, or a model dir")
    a("--objective", default=_S, help="clm | mlm | mlm+nsp | mlm+sop | rtd (= electra) (default mlm)")
    a("--data", default=_S, help="shard directory from `lmforge prepare`")
    a("--out", default=_S, help="output directory")
    a("--config", default=None, help="YAML file of options (keys as the long flags, with _); flags override it")
    a("--tokenizer", default=_S, help="check that the shards were made with this tokenizer dir")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=_S, help="optimizer steps")
    length.add_argument("--tokens", type=float, default=_S, help="training tokens (e.g. 2e6) instead of steps")
    a("--batch-size", type=int, default=_S, help="sequences per process per micro-batch (default 32)")
    a("--global-batch-size", type=int, default=_S, help="sequences per optimizer step (gradient accumulation)")
    a("--global-batch-tokens", type=int, default=_S, help="tokens per optimizer step (gradient accumulation)")
    a("--seq-len", type=int, default=_S, help="tokens per sequence (default 128)")
    a("--lr", type=float, default=_S, help="peak learning rate (default 1e-4)")
    a("--warmup", type=float, default=_S, help="warmup: steps (>= 1) or a ratio of the total (< 1)")
    a("--schedule", default=_S, choices=["linear", "cosine", "constant"], help="decay after warmup")
    a("--optimizer", default=_S, choices=["adamw", "lamb"], help="adamw (default) or lamb")
    a("--weight-decay", type=float, default=_S, help="weight decay (default 0.01; never on biases / norms)")
    a("--max-grad-norm", type=float, default=_S, help="gradient clipping norm (0 = off; default 1.0)")
    a("--save-every", type=int, default=_S, help="checkpoint every N steps")
    a("--keep", type=int, default=_S, help="keep the last K checkpoints (default 3)")
    a("--log-every", type=int, default=_S, help="metrics.jsonl record every N steps (default 10)")
    a("--eval-every", type=int, default=_S, help="validation every N steps (default: at the end only)")
    a("--val-batches", type=int, default=_S, help="validation batches per evaluation (default 20; 0 = off)")
    a("--resume", action="store_true", default=_S, help="continue from the newest checkpoint in --out")
    a("--compile", action="store_true", default=_S, help="torch.compile the model")
    a("--grad-checkpointing", action="store_true", default=_S, help="recompute activations (less memory)")
    a("--precision", default=_S, choices=["auto", "fp32", "bf16"], help="auto: bf16 on CUDA, fp32 on CPU")
    a("--distributed", default=_S, choices=["ddp", "fsdp"], help="under torchrun: ddp (default) or fsdp (GPU)")
    a("--seed", type=int, default=_S, help="seed for everything (default 0)")
    a("--mask-prob", type=float, default=_S, help="MLM: fraction of tokens to predict (default 0.15)")
    a("--masking", default=_S, choices=["static", "dynamic"], help="MLM masks: static (BERT) or dynamic (RoBERTa)")
    a("--whole-word", action="store_true", default=_S, help="MLM: mask whole words")
    a("--dupe-factor", type=int, default=_S, help="static masking: masked copies of the data (default 10)")
    a("--generator-size", type=float, default=_S, help="rtd: generator hidden size / the model's (0.25; base 1/3)")
    a("--disc-weight", type=float, default=_S, help="rtd: weight of the discriminator loss (default 50)")
    a("--device", default=_S, help="cpu | cuda (default: cuda when available)")
    a("--tensorboard", action="store_true", default=_S, help="also log to TensorBoard (when installed)")
    a("--no-progress", dest="progress", action="store_false", default=_S, help="no progress bar")
    a("--dry-run", action="store_true", default=False, help="print the resolved configuration and exit")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.pretrain import pretrain, resolve_config

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "dry_run")}
    config = resolve_config(given, args.config)
    config.dry_run = args.dry_run
    pretrain(config)
    return 0
