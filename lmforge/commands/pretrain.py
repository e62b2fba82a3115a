"""`lmforge pretrain`: pre-train a model on prepared shards with clm / mlm / mlm+nsp / mlm+sop.

Options resolve in three layers: TrainConfig defaults < a YAML file (``--config``) < flags given on
the command line. ``--dry-run`` prints the resolved configuration and exits. Runs unchanged under
``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError, suggest

_S = argparse.SUPPRESS  # "not given": only flags the user typed override the YAML file


@dataclass
class PretrainOptions:
    """What to train on what; the training knobs live in TrainConfig."""

    model: str | None = None  # a preset name, a ModelConfig file (.yaml / .json) or a model directory
    objective: str = "mlm"  # clm | mlm | mlm+nsp | mlm+sop
    data: str | None = None  # a shard directory written by `lmforge prepare`
    out: str | None = None  # output directory (final model, checkpoints/, metrics.jsonl, loss.png)
    tokenizer: str | None = None  # optional: check the shards were made with this tokenizer
    val_batches: int = 20  # validation batches per evaluation (0 switches validation off)
    mask_prob: float | None = None  # MLM: fraction of tokens selected (default 0.15)
    masking: str | None = None  # MLM: "dynamic" (RoBERTa) or "static" (BERT); default per objective
    whole_word: bool | None = None  # MLM: mask whole words
    dupe_factor: int | None = None  # static masking: masked copies of the data
    device: str | None = None  # "cpu" / "cuda"; default: CUDA when available


RUN_KEYS = tuple(f.name for f in fields(PretrainOptions))
ALIASES = {"tokens": "max_tokens"}  # flag name -> TrainConfig field


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default=_S, help="preset name (lmforge presets), a ModelConfig .yaml/.json, or a model dir")
    a("--objective", default=_S, help="clm | mlm | mlm+nsp | mlm+sop (default mlm)")
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
    a("--device", default=_S, help="cpu | cuda (default: cuda when available)")
    a("--tensorboard", action="store_true", default=_S, help="also log to TensorBoard (when installed)")
    a("--no-progress", dest="progress", action="store_false", default=_S, help="no progress bar")
    a("--dry-run", action="store_true", default=False, help="print the resolved configuration and exit")


def resolve(args: argparse.Namespace) -> tuple[PretrainOptions, Any, bool]:
    """(run options, TrainConfig, resume) from defaults < --config YAML < command-line flags."""
    from lmforge.train.config import TrainConfig, load_yaml

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "dry_run")}
    layered: dict[str, Any] = load_yaml(args.config) if args.config else {}
    layered.update(given)
    layered = {ALIASES.get(k, k): v for k, v in layered.items()}
    resume = bool(layered.pop("resume", False))
    if layered.get("max_tokens") is not None:
        layered["max_tokens"] = int(layered["max_tokens"])
        if layered.get("max_steps") is not None:  # one from the YAML file, one from a flag: the flag wins
            if "max_steps" in given:
                layered.pop("max_tokens")
            elif "tokens" in given:
                layered.pop("max_steps")
            else:
                raise ConfigError("give max_steps or tokens, not both")
    warmup = layered.pop("warmup", None)
    if warmup is not None:
        if warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {warmup}")
        if warmup >= 1:
            layered["warmup_steps"], layered["warmup_ratio"] = int(warmup), 0.0
        else:
            layered["warmup_ratio"], layered["warmup_steps"] = float(warmup), 0
    run = {k: layered.pop(k) for k in list(layered) if k in RUN_KEYS}
    known = (*RUN_KEYS, *TrainConfig.field_names(), "warmup", "tokens", "resume")
    for key in layered:
        if key not in TrainConfig.field_names():
            raise ConfigError(f"unknown option {key!r}." + suggest(key, known) + " Options are the long flags of "
                              "`lmforge pretrain --help` written with _ (lr, max_steps, batch_size ...).")
    options = PretrainOptions(**run)
    if "max_steps" not in layered and "max_tokens" not in layered and "epochs" not in layered:
        layered["max_steps"] = 1000
    train = TrainConfig.from_dict(layered)
    for name in ("model", "data", "out"):
        if not getattr(options, name):
            raise ConfigError(f"--{name} is required (on the command line or in the --config file)")
    return options, train, resume


def _load_model(options: PretrainOptions, *, head: str, tokenizer: Any, log) -> Any:
    """The model to train: a preset, a ModelConfig file or an existing model directory."""
    from lmforge import PRESETS, Model, ModelConfig

    # the special ids are the data's tokenizer's (None where it has none), whatever the preset says
    specials = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
    vocab = len(tokenizer)
    name = str(options.model)
    path = Path(name)
    if path.is_dir():
        model = Model.from_pretrained(path, head=head)
        if model.config.vocab_size != vocab:
            raise ConfigError(f"{path} has a vocabulary of {model.config.vocab_size} but the shards' tokenizer has "
                              f"{vocab}; continue pre-training with the tokenizer the model was made with")
        return model
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            from lmforge.train.config import load_yaml

            data = load_yaml(path)
        base = data.pop("preset", None)
        if base is not None:
            config = ModelConfig.from_preset(base, **data)
        else:
            config = ModelConfig.from_dict(data)
        what = str(path)
    elif name in PRESETS:
        config = ModelConfig.from_preset(name)
        what = f"preset {name}"
    else:
        raise ConfigError(f"--model {name!r} is neither a preset, a config file nor a model directory."
                          + suggest(name, PRESETS) + " See `lmforge presets`.")
    overrides: dict[str, Any] = {"head": head, **specials}
    if config.vocab_size != vocab:
        log(f"{what} has a vocabulary of {config.vocab_size:,}; using the data's tokenizer's {vocab:,} instead")
        overrides["vocab_size"] = vocab
    config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    return Model(config)


def run(args: argparse.Namespace) -> int:
    options, config, resume = resolve(args)
    if args.dry_run:
        import yaml

        resolved = {**asdict(options), "resume": resume, **config.to_dict()}
        print(yaml.safe_dump(resolved, sort_keys=False).rstrip())
        return 0

    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import OBJECTIVES, BatchSource, build_objective
    from lmforge.train import Trainer, objective_evaluator
    from lmforge.train.distributed import cleanup, init_distributed
    from lmforge.train.loop import seed_everything

    info = init_distributed(options.device)

    def log(message: str) -> None:
        if info.is_main:
            print(message, flush=True)

    if options.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {options.objective!r}; choose one of {', '.join(OBJECTIVES)}."
                          + suggest(options.objective, OBJECTIVES))
    data = Path(options.data)
    if not data.is_dir():
        raise DataError(f"shard directory not found: {data}; make one with `lmforge prepare --tokenizer DIR --out "
                        f"{data} FILES...`")
    train_set = ShardDataset(data, "train")
    tokenizer = train_set.load_tokenizer()
    train_set.verify_tokenizer(tokenizer)  # the copy in the shard dir must be the one that made the shards
    if options.tokenizer:
        from lmforge import Tokenizer

        train_set.verify_tokenizer(Tokenizer.from_pretrained(options.tokenizer))
    if train_set.num_tokens == 0:
        raise DataError(f"{data} holds no training tokens; re-run `lmforge prepare` on a non-empty corpus")

    masking = None
    mask_fields = {"mask_prob": options.mask_prob, "mode": options.masking, "whole_word": options.whole_word,
                   "dupe_factor": options.dupe_factor}
    mask_fields = {k: v for k, v in mask_fields.items() if v is not None}
    if mask_fields:
        if options.objective == "clm":
            raise ConfigError("masking options (--mask-prob, --masking, --whole-word, --dupe-factor) apply to the "
                              "mlm objectives, not to clm")
        import dataclasses

        # start from the family's default (static for mlm+nsp / mlm+sop, dynamic for mlm) and change the given fields
        masking = dataclasses.replace(OBJECTIVES[options.objective].default_masking, **mask_fields)
    objective = build_objective(options.objective, tokenizer=tokenizer, seq_len=config.seq_len, masking=masking)

    seed_everything(config.seed)  # the model's initial weights depend on the seed only
    model = _load_model(options, head=objective.heads(None), tokenizer=tokenizer, log=log)
    longest = getattr(model.config, "max_length", None) or getattr(model.config, "max_positions", None)
    if longest is not None and config.seq_len > longest:
        raise ConfigError(f"--seq-len {config.seq_len} is longer than the model's {longest} positions (max_positions "
                          f"{model.config.max_positions}); lower --seq-len or raise max_positions in the model config")

    source = BatchSource(objective, train_set, batch_size=config.batch_size, seed=config.seed, rank=info.rank,
                         world_size=info.world_size)
    evaluate = None
    if options.val_batches > 0 and "val" in train_set.meta.get("splits", {}):
        try:
            val_set = ShardDataset(data, "val")
            val_source = BatchSource(objective, val_set, batch_size=config.batch_size, seed=config.seed,
                                     shuffle=False)
            evaluate = objective_evaluator(objective, val_source, device=info.device, max_batches=options.val_batches)
        except DataError as err:
            log(f"no validation: {err}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"pretrain {options.objective} on {data} ({train_set.num_tokens:,} tokens, {source.steps_per_epoch:,} "
        f"micro-batches per epoch): {model.config.family or 'model'} with {n_params:,} parameters, "
        f"{info.world_size} process(es) on {info.device.type}")
    if info.is_main:
        import yaml

        Path(options.out).mkdir(parents=True, exist_ok=True)
        resolved = {**asdict(options), **config.to_dict()}
        (Path(options.out) / "pretrain_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    trainer = Trainer(model, objective, source, config, out_dir=options.out, evaluate=evaluate, tokenizer=tokenizer,
                      dist=info)
    try:
        result = trainer.train(resume=resume)
    finally:
        cleanup()
    summary = f"done: {result.step} steps"
    if result.final_loss is not None:
        summary += f", final training loss {result.final_loss:.4f}"
    if result.last_eval:
        summary += ", validation " + ", ".join(f"{k} {v:.4g}" for k, v in result.last_eval.items())
    log(summary)
    log(f"model, tokenizer, metrics.jsonl and loss.png in {options.out}")
    return 0
