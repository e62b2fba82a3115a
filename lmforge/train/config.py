"""TrainConfig: every knob of the training loop, typed, commented and checked.

Pre-training and fine-tuning share it. ``TrainConfig.from_dict`` fails on unknown keys naming the
field (with a suggestion); ``load_yaml`` reads a YAML mapping; ``merge`` applies command-line
overrides on top (defaults < YAML file < flags given on the command line).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import ConfigError, suggest

Schedule = Literal["linear", "cosine", "constant", "triangle"]
OptimizerName = Literal["adamw", "lamb"]
Precision = Literal["auto", "fp32", "bf16"]
Strategy = Literal["ddp", "fsdp"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": ("linear", "cosine", "constant", "triangle"),
    "optimizer": ("adamw", "lamb"),
    "precision": ("auto", "fp32", "bf16"),
    "distributed": ("ddp", "fsdp"),
    "best_mode": ("max", "min"),
    "on_nan": ("stop", "skip"),
}


@dataclass
class TrainConfig:
    """How long, how fast and how safely to train. Shared by `pretrain` and `finetune`."""

    # --- length (give one; max_steps wins, then max_tokens, then epochs) ---
    max_steps: int | None = None  # optimizer steps to run
    max_tokens: int | None = None  # stop after this many training tokens (global batch tokens x steps)
    epochs: float | None = None  # passes over the training data (fine-tuning); fractions allowed
    time_budget: float | None = None  # wall-clock seconds: the run plans its steps to end on time (train/budget.py)
    # --- batch ---
    batch_size: int = 32  # micro-batch: sequences per process per forward/backward
    global_batch_size: int | None = None  # sequences per optimizer step over all processes (None = batch_size x world)
    global_batch_tokens: int | None = None  # the same in tokens (= sequences x seq_len); exclusive with global_batch_size
    seq_len: int = 128  # tokens per sequence; converts token budgets into steps and sequences
    # --- optimizer ---
    optimizer: OptimizerName = "adamw"  # "adamw" (fused when available) or "lamb" (large-batch BERT / ALBERT)
    lr: float = 1e-4  # peak learning rate of the backbone
    head_lr: float | None = None  # peak learning rate of the head (params named head.*); None = lr
    layer_lr_decay: float = 1.0  # layer-wise lr decay: layer i of L gets lr * decay**(L - i), embeddings decay**(L+1)
    weight_decay: float = 0.01  # decoupled weight decay; never applied to biases and norm weights
    adam_beta1: float = 0.9  # first-moment decay
    adam_beta2: float = 0.999  # second-moment decay (GPT-2 style runs use 0.95)
    adam_eps: float = 1e-8  # denominator epsilon (BERT used 1e-6)
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 switches clipping off
    # --- schedule ---
    schedule: Schedule = "linear"  # after warmup: "linear" or "cosine" decay to min_lr_ratio x lr, or "constant"
    # ("triangle": Cramming's one-cycle, 0.25 x lr rising to lr at 75% of the steps, then linear to 0; optim.py)
    warmup_steps: int = 0  # linear warmup from 0 over this many steps
    warmup_ratio: float = 0.0  # ... or over this fraction of the total steps (exclusive with warmup_steps)
    min_lr_ratio: float = 0.0  # the decay ends at this fraction of the peak lr
    # --- precision and speed ---
    precision: Precision = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or force "fp32" / "bf16"
    compile: bool = False  # wrap the model in torch.compile
    grad_checkpointing: bool = False  # recompute layer activations in the backward pass (less memory)
    distributed: Strategy = "ddp"  # under torchrun: "ddp" or "fsdp" (sharded, DCP checkpoints); gloo CPU / nccl GPU
    on_nan: Literal["stop", "skip"] = "stop"  # a NaN / inf loss: stop the run, or skip that step's update
    seed: int = 0  # seeds python, numpy and torch (CPU and CUDA); the data order uses it too
    # --- evaluation, keep-best, early stopping ---
    eval_every: int | None = None  # run the evaluate callback every N optimizer steps (None = never by steps)
    eval_every_epoch: bool = False  # ... and/or at the end of every epoch
    best_metric: str | None = None  # keep a copy of the best model by this evaluation metric (e.g. "loss", "mcc")
    best_mode: Literal["max", "min"] = "min"  # whether larger or smaller best_metric is better
    patience: int | None = None  # stop after this many evaluations without improvement of best_metric
    load_best_at_end: bool = False  # the final model is the best one (needs best_metric)
    # --- checkpoints and logging ---
    save_every: int | None = None  # write a resumable checkpoint every N optimizer steps (None = only at the end)
    keep: int = 3  # keep the last K checkpoints
    log_every: int = 10  # write a metrics.jsonl record (and refresh the bar) every N steps
    progress: bool = True  # show a tqdm progress bar (rank 0)
    tensorboard: bool = False  # also log to TensorBoard when it is installed

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the first impossible field."""
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"TrainConfig.{name} must be one of {', '.join(choices)}, got {value!r}."
                                  + suggest(str(value), choices))
        positive_or_none = ("max_steps", "max_tokens", "epochs", "global_batch_size", "global_batch_tokens",
                            "eval_every", "save_every", "patience")
        for name in positive_or_none:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"TrainConfig.{name} must be positive (or unset), got {value}",
                                  cli=f"{_flag(name)} must be positive, got {value}")
        self._validate_budget()
        for name in ("batch_size", "seq_len", "keep", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}",
                                  cli=f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise ConfigError(f"learning rates must be positive, got lr={self.lr}, head_lr={self.head_lr}")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"TrainConfig.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.adam_eps <= 0:
            raise ConfigError("weight_decay and max_grad_norm must be >= 0 and adam_eps > 0")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ConfigError(f"adam betas must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if self.warmup_steps < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError("warmup_steps must be >= 0 and warmup_ratio in [0, 1)")
        if self.warmup_steps and self.warmup_ratio:
            raise ConfigError("give warmup_steps or warmup_ratio, not both")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.global_batch_size is not None and self.global_batch_tokens is not None:
            raise ConfigError("give global_batch_size (sequences) or global_batch_tokens, not both")
        if self.global_batch_tokens is not None and self.global_batch_tokens % self.seq_len:
            raise ConfigError(f"global_batch_tokens={self.global_batch_tokens} is not a multiple of "
                              f"seq_len={self.seq_len}; choose a multiple")
        if self.load_best_at_end and not self.best_metric:
            raise ConfigError("load_best_at_end needs best_metric (the metric that picks the best model)")
        if self.patience is not None and not self.best_metric:
            raise ConfigError("patience (early stopping) needs best_metric")

    def _validate_budget(self) -> None:
        """A time budget decides the length itself: no other length with it."""
        if self.time_budget is None:
            return
        if not isinstance(self.time_budget, (int, float)) or isinstance(self.time_budget, bool) \
                or not math.isfinite(self.time_budget) or self.time_budget <= 0:
            raise ConfigError(f"TrainConfig.time_budget is seconds and must be positive, got {self.time_budget!r}",
                              cli=f"--time-budget must be positive, got {self.time_budget!r}")
        other = [n for n in ("max_steps", "max_tokens", "epochs") if getattr(self, n) is not None]
        if other:
            why = "each sets the run's length (the budget plans the steps from the measured step time); keep one"
            raise ConfigError(f"give time_budget or {', '.join(other)}, not both: {why}",
                              cli=f"give --time-budget or {', '.join(_flag(n) for n in other)}, not both: {why}")

    # ------------------------------------------------------------------ derived
    def global_sequences(self, world_size: int = 1) -> int:
        """Sequences per optimizer step over all processes."""
        if self.global_batch_tokens is not None:
            return self.global_batch_tokens // self.seq_len
        if self.global_batch_size is not None:
            return self.global_batch_size
        return self.batch_size * world_size

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Micro-batches each process runs per optimizer step to reach the global batch."""
        per_pass = self.batch_size * world_size
        total = self.global_sequences(world_size)
        if total % per_pass:
            raise ConfigError(
                f"the global batch of {total} sequences is not a multiple of batch_size {self.batch_size} x "
                f"{world_size} process(es) = {per_pass}; change batch_size or the global batch")
        return total // per_pass

    def total_steps(self, *, steps_per_epoch: int | None = None, world_size: int = 1) -> int:
        """Optimizer steps this run takes, from max_steps, max_tokens or epochs (a time budget: the Trainer plans)."""
        if self.max_steps is not None:
            return self.max_steps
        if self.max_tokens is not None:
            return max(1, math.ceil(self.max_tokens / (self.global_sequences(world_size) * self.seq_len)))
        if self.epochs is not None:
            if steps_per_epoch is None:
                raise ConfigError("epochs needs a batch source that knows its length")
            return max(1, math.ceil(self.epochs * steps_per_epoch))
        raise ConfigError("say how long to train: max_steps, max_tokens or epochs")

    def warmup_for(self, total_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps else int(self.warmup_ratio * total_steps)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A TrainConfig from a mapping; an unknown key fails naming it."""
        known = cls.field_names()
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown training option {key!r}." + suggest(key, known)
                                  + f" Known options: {', '.join(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})


def _flag(name: str) -> str:
    """The command-line flag (and YAML key) of a field, for messages printed by the CLI."""
    return {"max_tokens": "--tokens"}.get(name, "--" + name.replace("_", "-"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (ConfigError when missing or not a mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; None values in a layer mean 'not given'."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None})
    return out


__all__ = ["TrainConfig", "load_yaml", "merge"]
