"""The training loop: one readable loop for pre-training and fine-tuning.

    trainer = Trainer(model, objective, source, config, out_dir="runs/x", evaluate=fn, tokenizer=tok)
    result = trainer.train(resume=True)

* ``objective.loss(model, batch) -> (loss, metrics)``: the objective calls the model itself.
* ``source.batch(epoch, step)`` + ``source.steps_per_epoch``: batches addressed by position, so
  resuming seeks in O(1) (``lmforge.objectives.BatchSource``, or ``list_source`` for in-memory data).
  A source built for ``rank`` / ``world_size`` gives this process its slice of each global batch.
* One optimizer step = ``accumulation_steps`` micro-batches per process. Optimizer step ``s`` reads
  micro-steps ``(s % E) * A ... + A - 1`` of epoch ``s // E`` (E = optimizer steps per epoch): the data
  position is a pure function of the step.
* Exact resume: weights, optimizer, scheduler, every RNG (per rank) and the step are checkpointed
  atomically; a resumed run continues bitwise-identically on CPU. ``train(resume=True)`` refuses settings
  that differ from the saved run's (listing them all) unless ``allow_changes``, and a finished run is left
  untouched unless its length was raised.
* Ctrl-C (SIGINT) stops at the next step boundary with a checkpoint (``TrainingInterrupted``); a second
  Ctrl-C stops at once. SIGTERM (a scheduler's preemption) does the same, with ``preempted`` set (the CLI
  then exits 0).
* ``distributed="fsdp"``: FSDP2 on CPU or GPU and sharded DCP checkpoints; a checkpoint (sharded or not)
  resumes on another number of processes when the global batch stays the same (the data position is a
  function of the step and the global batch).
* A NaN / inf loss stops the run (``on_nan="stop"``, ``TrainingDiverged``) or skips that step's update
  (``"skip"``); both name the step. A damaged newest checkpoint is moved aside and the one before used.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lmforge.errors import CheckpointError, ConfigError, DataError, LmforgeError
import lmforge.train.checkpoint as ckpt
from lmforge.train.budget import BudgetPlan, Probe, format_duration
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import (DistInfo, all_reduce_grads, all_reduce_mean, barrier, broadcast_object, full_state_dicts,
                                       gather_objects, init_distributed, is_fsdp, load_optimizer_state, materialize,
                                       on_meta, unwrap, wrap_model)
from lmforge.train.logging import PLOT_FILE, RunLogger, plot_loss
from lmforge.train.optim import build_optimizer, build_scheduler, clip_grad_norm, param_groups

Batch = dict[str, Any]
Evaluate = Callable[[torch.nn.Module], dict[str, float]]


class TrainingDiverged(LmforgeError):
    """The loss became NaN or infinite; the run stopped before applying that step."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run: at a step boundary after writing ``checkpoint`` (``written``), or at once
    (a second Ctrl-C; ``checkpoint`` is then the newest earlier one, or None)."""

    def __init__(self, message: str, *, step: int, checkpoint: Path | None, written: bool,
                 preempted: bool = False) -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.written = step, checkpoint, written
        self.preempted = preempted  # SIGTERM, not Ctrl-C: a clean stop, exit status 0


# settings a resumed run may change: its length, how often it saves / logs / evaluates, and speed or
# placement knobs that do not change what is computed; every other difference needs allow_changes
RESUME_MAY_CHANGE = frozenset({
    "max_steps", "max_tokens", "epochs", "save_every", "keep", "log_every", "progress", "tensorboard",
    "eval_every", "eval_every_epoch", "compile", "grad_checkpointing", "device", "out", "val_batches",
    "eval_batch_size", "on_nan", "time_budget",
    "sparse_rows"})  # finetune's row gradient: the same optimizer state, AdamW's result (train/optim.py SparseRows)
# ... and these cannot change even then: the optimizer state would not fit
RESUME_FIXED = ("optimizer",)


def settings_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, new)}`` for every setting that differs (keys only one side has are not compared)."""
    new = json.loads(json.dumps(new, default=str))  # as the saved side went through JSON: tuples are lists
    return {k: (saved[k], v) for k, v in new.items()
            if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != v}


class BatchSourceLike(Protocol):
    """What the loop needs from a batch source."""

    steps_per_epoch: int  # micro-batches per epoch for this process

    def batch(self, epoch: int, step: int) -> Batch: ...


class LossObjective(Protocol):
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]: ...


@dataclass
class TrainResult:
    """How a run ended."""

    step: int  # optimizer steps done
    total_steps: int  # steps planned
    stopped: str  # "completed" | "early_stopping" | "already_complete" (a finished run resumed: nothing done)
    final_loss: float | None  # mean training loss of the last logging window
    last_eval: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics
    best_metric: float | None = None  # best value of config.best_metric seen
    best_step: int | None = None  # step where it was seen (the model in OUT/best)
    out_dir: Path | None = None


@dataclass
class _StepStats:
    """What one optimizer step reports to the log."""

    loss: float  # mean loss over the micro-batches and processes
    grad_norm: float | None  # before clipping; None when clipping is off
    lr: float  # the learning rate the step used
    tokens: int  # tokens this process trained on
    metric_items: list[dict[str, Any]]  # the objective's metrics per micro-batch


@dataclass
class _Window:
    """The steps since the last log record: their losses, tokens and when the window's clock started."""

    losses: list[float]
    t_last: float
    tokens: int = 0

    @contextmanager
    def paused(self):
        """Evaluation and checkpointing time does not count towards tokens/s."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.t_last += time.perf_counter() - t


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def enable_grad_checkpointing(model: torch.nn.Module) -> None:
    """Switch activation recomputation on (the body's ``gradient_checkpointing`` flag)."""
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return
    body = getattr(model, "body", None)
    if body is not None and hasattr(body, "gradient_checkpointing"):
        body.gradient_checkpointing = True
        return
    raise ConfigError("this model does not support gradient checkpointing (no body.gradient_checkpointing flag)")


def _precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class Trainer:
    """Runs ``config`` on ``model`` with ``objective`` over ``source``; see the module docstring.

    Args:
        model: the module to train (moved to the device; wrapped for DDP/FSDP/compile internally).
        objective: anything with ``loss(model, batch) -> (loss, metrics)``; ``extra_modules()`` (optional)
            names networks it owns that are trained and checkpointed too.
        source: batches by ``(epoch, micro_step)`` for this rank, built with ``batch_size=config.batch_size``.
        config: the TrainConfig.
        out_dir: where metrics.jsonl, checkpoints/, best/ and the final model go.
        evaluate: ``evaluate(model) -> {metric: value}``, run every ``eval_every`` steps, every epoch
            (``eval_every_epoch``) and at the end; called on every rank with the unwrapped model in
            eval mode under ``torch.no_grad`` (and the run's autocast).
        groups: optimizer parameter groups (``lmforge.train.optim.param_groups``); default: built from
            the config (lr, head_lr, layer_lr_decay, weight_decay).
        tokenizer: saved beside the final and best models (``save_pretrained``).
        dist: the DistInfo (default: ``init_distributed()``, which reads torchrun's environment).
        save_extra: ``save_extra(dir)`` writes additional files into the final / best model dirs.
        run_config: the caller's own settings (objective, data, model ...; JSON values), saved with every
            checkpoint and compared like the TrainConfig when the run is resumed.
        clock: seconds for ``config.time_budget`` (default ``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, model: torch.nn.Module, objective: LossObjective, source: BatchSourceLike,
                 config: TrainConfig, *, out_dir: str | Path, evaluate: Evaluate | None = None,
                 groups: list[dict] | None = None, tokenizer: Any = None, dist: DistInfo | None = None,
                 save_extra: Callable[[Path], None] | None = None, run_config: dict[str, Any] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config, self.objective, self.source = config, objective, source
        self.clock = clock or time.monotonic
        self.budget: BudgetPlan | None = None  # a time-budgeted run's plan (train/budget.py)
        self.run_config = dict(run_config or {})
        self._sigint = False  # set by the first Ctrl-C: stop at the next step boundary
        self._sigterm = False  # set by SIGTERM: the same, then a clean exit
        self._at_step = 0  # the step the loop is in (for the interruption message)
        self.out_dir = Path(out_dir)
        self.evaluate_fn, self.tokenizer, self.save_extra = evaluate, tokenizer, save_extra
        self.dist = dist or init_distributed()
        self.device = self.dist.device
        # a model built on the meta device is allocated after FSDP sharded it (train()), each rank its shards
        self._meta = on_meta(model) and config.distributed == "fsdp"
        self.model = model if self._meta else (materialize(model, self.device) if on_meta(model) else model.to(self.device))
        self.extra = dict(objective.extra_modules()) if hasattr(objective, "extra_modules") else {}
        for module in self.extra.values():
            module.to(self.device)
        src_bs = getattr(source, "batch_size", None)
        if src_bs is not None and src_bs != config.batch_size:
            raise ConfigError(f"the batch source makes batches of {src_bs} but TrainConfig.batch_size is "
                              f"{config.batch_size}; build both with the same batch size")
        self.accum = config.accumulation_steps(self.dist.world_size)
        self.steps_per_epoch = source.steps_per_epoch // self.accum  # optimizer steps per epoch
        if self.steps_per_epoch < 1:
            raise DataError(
                f"the training data gives {source.steps_per_epoch} micro-batch(es) of {config.batch_size} per "
                f"process, fewer than one optimizer step ({self.accum} micro-batch(es) x {self.dist.world_size} "
                "process(es)); lower the batch size or add data")
        # a time budget plans the steps in train(), from the measured step time
        self.total_steps = 0 if config.time_budget is not None else config.total_steps(
            steps_per_epoch=self.steps_per_epoch, world_size=self.dist.world_size)
        self.autocast_dtype = _precision(config, self.device)
        if config.grad_checkpointing:
            enable_grad_checkpointing(self.model)
        self._groups = groups
        self.ckpt_dir = self.out_dir / "checkpoints"

    # ------------------------------------------------------------------ pieces
    def _named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = list(unwrap(self.model).named_parameters())
        seen = {id(p) for _, p in named}  # an extra network may share tensors with the model (ELECTRA's embeddings)
        for name, module in self.extra.items():
            named += [(f"objective.{name}.{n}", p) for n, p in module.named_parameters() if id(p) not in seen]
        return named

    def _extra_only_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the objective's networks that the model does not hold (DDP does not see them)."""
        own = {id(p) for p in unwrap(self.model).parameters()}
        out: dict[int, torch.nn.Parameter] = {}
        for module in self.extra.values():
            out.update((id(p), p) for p in module.parameters() if id(p) not in own and p.requires_grad)
        return list(out.values())

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _micro_batch(self, step: int, micro: int) -> Batch:
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.source.batch(epoch, pos * self.accum + micro)

    def _note(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    # ------------------------------------------------------------------ the loop
    def train(self, *, resume: bool = False, allow_changes: bool = False,
              on_start: Callable[[], None] | None = None) -> TrainResult:
        """Train to ``total_steps`` (or early stopping) and write the final model to ``out_dir``.

        ``resume``: continue from the newest checkpoint (from step 0 when there is none); a finished run
        is left untouched (``stopped="already_complete"``) unless ``total_steps`` grew. Settings that
        differ from the saved run's are refused, all listed, unless ``allow_changes``. ``on_start`` runs
        on rank 0 once training is sure to start, before anything is written.
        """
        cfg, info = self.config, self.dist
        plan = self._resume_point(resume, allow_changes)
        if plan["start"] == "complete":
            return self._already_complete(plan["final"])
        probe = self._start_budget(plan) if cfg.time_budget is not None else None  # refuses a too short budget
        if on_start is not None and info.is_main:
            on_start()
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = unwrap(self.model)
        fsdp = cfg.distributed == "fsdp"
        if fsdp:  # FSDP2 shards parameters in place; the optimizer must see the sharded ones
            self.model = wrap_model(self.model, info, strategy="fsdp", precision=self.autocast_dtype)
            if self._meta:
                self.model = materialize(self.model, self.device, seed=cfg.seed + 7919 * (info.rank + 1))
                self._meta = False
        groups = self._groups or param_groups(self._named_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                              head_lr=cfg.head_lr, layer_lr_decay=cfg.layer_lr_decay,
                                              num_layers=getattr(getattr(raw, "config", None), "num_layers", None))
        optimizer = build_optimizer(groups, cfg)
        scheduler = build_scheduler(optimizer, cfg, self.total_steps)

        # ---- resume or start fresh
        state: dict[str, Any] = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "last_eval": {},
                                 "window": []}
        if plan["start"] == "checkpoint":
            state = self._restore(Path(plan["path"]), optimizer, scheduler, allow_changes=allow_changes)
        else:
            # dropout differs per rank; the data order does not depend on these RNGs
            seed_everything(cfg.seed + 1_000_003 * info.rank)
        if probe is not None:
            self._first_plan(probe, state["step"], scheduler)

        model = self.model if fsdp else wrap_model(self.model, info, strategy="ddp")
        if cfg.compile:
            model = torch.compile(model)
        logger = RunLogger(self.out_dir, enabled=info.is_main, total_steps=self.total_steps,
                           start_step=state["step"], progress=cfg.progress, tensorboard=cfg.tensorboard)
        try:
            with self._sigint_stops_at_step_boundary():
                result = self._run(model, optimizer, scheduler, state, logger)
        except TrainingInterrupted:
            raise
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # the disk filled outside a checkpoint write (metrics.jsonl, the final model): one message, exit 2
            found = ckpt.list_checkpoints(self.ckpt_dir)
            where = f"the newest complete checkpoint is {found[-1]}" if found else "no checkpoint was written"
            raise CheckpointError(f"the disk of {self.out_dir} is full ({err}) after step {self._at_step}; {where}. "
                                  "Free disk space and run again with --resume") from None
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, mid-step
            found = ckpt.list_checkpoints(self.ckpt_dir)
            last = found[-1] if found else None
            where = f"the newest is {last}" if last else "there is none"
            raise TrainingInterrupted(f"interrupted at once (a second Ctrl-C) after {self._at_step} of "
                                      f"{self.total_steps} steps; no checkpoint was written then ({where})",
                                      step=self._at_step, checkpoint=last, written=False) from None
        finally:
            try:
                logger.close()
            except OSError as err:  # a full disk: the log's tail is lost; an error in flight says why
                self._note(f"warning: could not finish writing {self.out_dir / 'metrics.jsonl'} ({err})")
        if info.is_main:
            try:
                plot_loss(self.out_dir)
            except (ImportError, OSError) as err:  # a chart (e.g. Pillow without FreeType): the run is saved
                self._note(f"warning: {self.out_dir / PLOT_FILE} was not drawn ({err})")
        barrier(info)
        return result

    def _run(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any], logger: RunLogger) -> TrainResult:
        cfg = self.config
        params = [p for g in optimizer.param_groups for p in g["params"]]
        ddp = isinstance(model if not hasattr(model, "_orig_mod") else model._orig_mod,
                         torch.nn.parallel.DistributedDataParallel)
        step, stopped = state["step"], "completed"
        window = _Window(losses=list(state["window"]), t_last=time.perf_counter())
        model.train()
        for module in self.extra.values():
            module.train()
        while step < self.total_steps:
            self._at_step = step  # steps done, for the message of a second Ctrl-C
            stats = self._step(model, optimizer, scheduler, params, step, ddp=ddp)
            if not math.isfinite(stats.loss):
                logger.note(f"step {step + 1}: the loss is {stats.loss}; its update was skipped (on_nan=skip)")
            step += 1
            self._at_step = step
            if self.budget is not None:
                self._revise_plan(step, scheduler, logger)
            if math.isfinite(stats.loss):  # a skipped step's NaN would poison the window's mean
                window.losses.append(stats.loss)
            window.tokens += stats.tokens * self.dist.world_size
            if step % cfg.log_every == 0 or step == self.total_steps:
                self._log(logger, step, stats, window)
            if self._evaluation_due(step):
                with window.paused():  # tokens/s counts training time only
                    if self._evaluate(model, step, state, logger):
                        stopped = "early_stopping"
            interrupted, preempted = self._interrupted()  # collective: every process stops at the same step
            # after the evaluation, so its result is part of the saved state; one at the end too, so a
            # finished run can be continued when its length is raised
            end = step == self.total_steps or stopped == "early_stopping"
            if (cfg.save_every and (step % cfg.save_every == 0 or end)) or interrupted:
                state.update(step=step, window=window.losses)
                with window.paused():
                    self._save_checkpoint(optimizer, scheduler, state)
            if interrupted:
                path = self.ckpt_dir / ckpt.checkpoint_name(step)
                how = "stopped by SIGTERM" if preempted else "interrupted"
                raise TrainingInterrupted(f"{how} after step {step} of {self.total_steps}; checkpoint written: "
                                          f"{path}", step=step, checkpoint=path, written=True, preempted=preempted)
            if stopped == "early_stopping":
                logger.note(f"early stopping at step {step}: {cfg.best_metric} has not improved for "
                            f"{cfg.patience} evaluation(s) (best {state['best']:.6g} at step {state['best_step']})")
                break

        state.update(step=step, window=window.losses, stopped=stopped)
        self._save_final(state)
        if self.budget is not None:
            self._note(f"time budget: {format_duration(self.budget.used())} of {format_duration(self.budget.seconds)} "
                       f"used, {step} steps")
        losses = window.losses
        return TrainResult(step=step, total_steps=self.total_steps, stopped=stopped,
                           final_loss=(sum(losses) / len(losses)) if losses else _last_train_loss(self.out_dir),
                           last_eval=state["last_eval"], best_metric=state["best"], best_step=state["best_step"],
                           out_dir=self.out_dir)

    def _step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, params: list[torch.nn.Parameter], step: int, *,
              ddp: bool) -> _StepStats:
        """Optimizer step ``step + 1``: accumulate the micro-batches, check the loss, clip, step."""
        cfg, info = self.config, self.dist
        losses, metric_items, tokens = [], [], 0
        for micro in range(self.accum):
            batch = to_device(self._micro_batch(step, micro), self.device)
            # DDP all-reduces gradients on the last micro-batch only
            sync = nullcontext() if (not ddp or micro == self.accum - 1) else model.no_sync()
            with sync:
                with self._autocast():
                    loss, metrics = self.objective.loss(model, batch)
                (loss / self.accum).backward()
            losses.append(loss.detach().float())
            metric_items.append(metrics)
            tokens += int(metrics["tokens"]) if "tokens" in metrics else int(batch["input_ids"].numel())
        if info.distributed and self.extra:  # DDP averaged the model's gradients; the extra networks' here
            all_reduce_grads(self._extra_only_parameters(), info)
        step_loss = float(all_reduce_mean(torch.stack(losses).mean(), info))
        if not math.isfinite(step_loss):
            optimizer.zero_grad(set_to_none=True)
            if cfg.on_nan == "stop":
                raise self._diverged(step + 1, step_loss)
            # skip: no update, but the schedule and the data move on (both are functions of the step)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            return _StepStats(loss=step_loss, grad_norm=None, lr=lr, tokens=tokens, metric_items=metric_items)
        if cfg.max_grad_norm > 0:
            norm = clip_grad_norm(params, cfg.max_grad_norm)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
        else:
            grad_norm = None
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return _StepStats(loss=step_loss, grad_norm=grad_norm, lr=lr, tokens=tokens, metric_items=metric_items)

    def _log(self, logger: RunLogger, step: int, stats: _StepStats, window: _Window) -> None:
        """A metrics.jsonl record of the window since the last one (mean loss, tokens/s), then a new window."""
        now = time.perf_counter()
        tps = window.tokens / max(now - window.t_last, 1e-9)
        record: dict[str, Any] = {"split": "train", "step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                  "loss": sum(window.losses) / len(window.losses) if window.losses else stats.loss,
                                  "lr": stats.lr,
                                  "tokens_per_s": round(tps, 1)}
        left = {}
        if self.budget is not None:
            record["time_left_s"] = round(self.budget.left(), 1)
            record["elapsed_s"] = round(self.budget.used(), 2)  # loss against wall-clock minutes (benchmarks)
            left = {"left": format_duration(record["time_left_s"])}
        if stats.grad_norm is not None:
            record["grad_norm"] = stats.grad_norm
        record |= _metric_summary(stats.metric_items)
        logger.log(record)
        logger.advance(len(window.losses), loss=f"{record['loss']:.4f}", lr=f"{stats.lr:.2e}", tok_s=f"{tps:,.0f}", **left)
        window.losses, window.tokens, window.t_last = [], 0, now

    def _evaluation_due(self, step: int) -> bool:
        cfg = self.config
        end_of_epoch = step % self.steps_per_epoch == 0
        return self.evaluate_fn is not None and bool(
            (cfg.eval_every and step % cfg.eval_every == 0) or (cfg.eval_every_epoch and end_of_epoch)
            or step == self.total_steps)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, model: torch.nn.Module, step: int, state: dict[str, Any], logger: RunLogger) -> bool:
        """Run the callback, log it, update the best model; True when early stopping triggers."""
        cfg = self.config
        raw = unwrap(model)
        raw.eval()
        with torch.no_grad(), self._autocast():
            metrics = {k: float(v) for k, v in self.evaluate_fn(raw).items()}
        raw.train()
        state["last_eval"] = metrics
        logger.log({"split": "val", "step": step, "epoch": round(step / self.steps_per_epoch, 4), **metrics})
        logger.note("step " + str(step) + " val: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if not cfg.best_metric:
            return False
        if cfg.best_metric not in metrics:
            raise ConfigError(f"best_metric {cfg.best_metric!r} is not among the evaluation metrics "
                              f"({', '.join(metrics)})")
        value = metrics[cfg.best_metric]
        best = state["best"]
        better = best is None or (value > best if cfg.best_mode == "max" else value < best)
        if better and math.isfinite(value):
            state.update(best=value, best_step=step, bad_evals=0)
            self._save_model_dir(self.out_dir / "best", extra={"best_metric": cfg.best_metric, "value": value,
                                                               "step": step})
            return False
        state["bad_evals"] += 1
        return cfg.patience is not None and state["bad_evals"] >= cfg.patience

    # ------------------------------------------------------------------ saving / restoring
    def _trainer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        epoch, pos = divmod(state["step"], self.steps_per_epoch)
        return {
            "step": state["step"], "total_steps": self.total_steps,
            # where the data resumes: optimizer step -> (epoch, micro-step) of the batch source, O(1)
            "data_position": {"epoch": epoch, "micro_step": pos * self.accum, "accumulation_steps": self.accum,
                              "steps_per_epoch": self.steps_per_epoch},
            "best": state["best"], "best_step": state["best_step"], "bad_evals": state["bad_evals"],
            "last_eval": state["last_eval"], "window": state["window"],
            "world_size": self.dist.world_size, "config": self.config.to_dict(), "run": self.run_config,
            **({"budget": self.budget.state()} if self.budget is not None else {}),
            **({"stopped": state["stopped"]} if "stopped" in state else {}),
        }

    def _save_checkpoint(self, optimizer, scheduler, state: dict[str, Any]) -> None:
        info = self.dist
        if self.config.distributed == "fsdp":
            if self.extra:
                raise ConfigError("sharded (fsdp) checkpoints do not hold an objective's own networks; use ddp")
            from lmforge.train.distributed import sharded_state_dicts

            ckpt.save_sharded_checkpoint(self.ckpt_dir, state["step"], state=sharded_state_dicts(self.model, optimizer),
                                         info=info, scheduler_state=scheduler.state_dict(),
                                         rng_states=gather_objects(ckpt.rng_state(), info),
                                         trainer_state=self._trainer_state(state), keep=self.config.keep)
            return
        model_state, optim_state = full_state_dicts(self.model, optimizer)
        rngs = gather_objects(ckpt.rng_state(), info)
        if info.is_main:
            ckpt.save_checkpoint(self.ckpt_dir, state["step"], model_state=model_state, model=unwrap(self.model),
                                 optimizer_state=optim_state, scheduler_state=scheduler.state_dict(),
                                 rng_states=rngs, trainer_state=self._trainer_state(state),
                                 extra_states={k: m.state_dict() for k, m in self.extra.items()},
                                 keep=self.config.keep)
        barrier(info)

    # ------------------------------------------------------------------ resume planning
    def _resume_point(self, resume: bool, allow_changes: bool) -> dict[str, Any]:
        """Where this run starts, decided on rank 0 before anything in out_dir is touched: ``{"start": "fresh" |
        "checkpoint" | "complete", "path": the checkpoint, "final": a finished run's trainer_state}``."""
        plan: dict[str, Any] = {"start": "fresh"}
        error: LmforgeError | None = None
        if self.dist.is_main:
            try:
                plan = self._plan(resume, allow_changes)
            except LmforgeError as err:
                error = err
        shared = broadcast_object(str(error) if error is not None else plan, self.dist)
        if error is not None:
            raise error
        if isinstance(shared, str):  # rank 0 refused: the other processes stop with the same message
            raise ConfigError(shared)
        return shared

    def _plan(self, resume: bool, allow_changes: bool) -> dict[str, Any]:
        cfg = self.config
        final_file = self.out_dir / ckpt.STATE_FILE  # written by _save_final: the run finished
        try:
            final = json.loads(final_file.read_text(encoding="utf-8")) if final_file.is_file() else None
        except ValueError as err:
            raise CheckpointError(f"{final_file} is unreadable ({err}); remove it to resume from the newest "
                                  "checkpoint") from None
        # on resume a damaged newest checkpoint is moved aside (said, not deleted): the one before is used
        found = ckpt.usable_checkpoints(self.ckpt_dir, self._note) if resume else ckpt.list_checkpoints(self.ckpt_dir)
        if not resume:
            if found or final is not None:
                raise ConfigError(f"{self.out_dir} already holds a run; pass --resume to continue it, --overwrite to "
                                  "start over, or choose another --out")
            return {"start": "fresh"}
        if not found and final is None:
            self._note(f"resume: no checkpoint in {self.ckpt_dir}; starting from step 0")
            return {"start": "fresh"}
        newest = _read_state(found[-1]) if found else None
        # a finished run, unless a checkpoint is past its end (it was being continued to a longer length)
        finished = final is not None and (newest is None or newest["step"] <= final["step"])
        saved = final if finished else newest
        assert saved is not None
        changes = settings_changes({**saved.get("config", {}), **saved.get("run", {})},
                                   {**cfg.to_dict(), **self.run_config})
        listed = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        fixed = [k for k in RESUME_FIXED if k in changes]
        if fixed:
            raise ConfigError(f"cannot resume the run in {self.out_dir} with another {', '.join(fixed)} ({listed}); "
                              "its saved state would not fit. Start a new run from its weights (--model with its "
                              "model directory) instead")
        if changes and not allow_changes:
            raise ConfigError(f"cannot resume the run in {self.out_dir}: {len(changes)} setting(s) differ from the "
                              f"saved run (saved -> now): {listed}. Give the saved values, or pass --allow-changes "
                              "to continue with the new ones")
        if finished:
            assert final is not None
            done, planned = int(final["step"]), int(final.get("total_steps", final["step"]))
            if self.total_steps <= planned:
                return {"start": "complete", "final": final}
            if newest is None or newest["step"] != done:
                kept = f"its newest is {found[-1].name}" if found else "it kept none"
                raise ConfigError(f"{self.out_dir} holds a run that finished at step {done} without a checkpoint at "
                                  f"that step ({kept}; --save-every keeps one at the end), so it cannot continue to "
                                  f"step {self.total_steps}. Start a new run from its weights: --model "
                                  f"{self.out_dir} --out NEW_DIR")
        elif newest is not None and cfg.time_budget is None and newest["step"] > self.total_steps:
            raise ConfigError(f"the newest checkpoint {found[-1]} is at step {newest['step']}, past this run's end at "
                              f"step {self.total_steps}; give the saved length (or a longer one)")
        if changes:
            self._note(f"resume: continuing with changed settings (saved -> now): {listed}")
        latest = ckpt.latest_checkpoint(self.ckpt_dir)  # also clears what a killed save left behind
        return {"start": "checkpoint", "path": str(latest)}

    def _already_complete(self, final: dict[str, Any]) -> TrainResult:
        """A finished run resumed without a longer length: say so, touch nothing."""
        cfg = self.config
        longer = "--epochs" if cfg.max_steps is None and cfg.max_tokens is None and cfg.epochs is not None \
            else "--max-steps or --tokens"
        if cfg.time_budget is not None:  # a budgeted run that ended on time
            self._note(f"{self.out_dir} holds a run that ended within its --time-budget ({final['step']} steps); "
                       f"nothing to do. To train further, start a new run from its weights: --model {self.out_dir} "
                       "--out NEW_DIR")
            return TrainResult(step=int(final["step"]), total_steps=int(final.get("total_steps", final["step"])),
                               stopped="already_complete", final_loss=_last_train_loss(self.out_dir),
                               last_eval=final.get("last_eval", {}), best_metric=final.get("best"),
                               best_step=final.get("best_step"), out_dir=self.out_dir)
        self._note(f"{self.out_dir} holds a finished run ({final['step']} of {final.get('total_steps', final['step'])} "
                   f"steps); nothing to do. Raise {longer} to train further.")
        return TrainResult(step=int(final["step"]), total_steps=int(final.get("total_steps", final["step"])),
                           stopped="already_complete", final_loss=_last_train_loss(self.out_dir),
                           last_eval=final.get("last_eval", {}), best_metric=final.get("best"),
                           best_step=final.get("best_step"), out_dir=self.out_dir)

    # ------------------------------------------------------------------ time budget
    def _start_budget(self, plan: dict[str, Any]) -> Probe:
        """Start the budget's clock (with the time a resumed run used), time one step, one save and one evaluation,
        and refuse a budget that cannot hold a step plus the final save: all before anything is written."""
        cfg, info = self.config, self.dist
        if self._meta:
            raise ConfigError("--time-budget needs the model built before training (it times a step first); a model "
                              "on the meta device (FSDP) is not supported: give --max-steps or --tokens")
        saved = _read_state(Path(plan["path"])).get("budget") if plan["start"] == "checkpoint" else None
        self.budget = BudgetPlan.from_state(float(cfg.time_budget), saved, clock=self.clock)
        self.budget.start()
        probe = self._probe()
        probe = broadcast_object(probe, self.dist)  # rank 0's measurement decides for every process
        self.budget.check_fits(probe)
        if saved and info.is_main:
            self._note(f"resume: {format_duration(self.budget.left())} of the {format_duration(self.budget.seconds)} "
                       f"budget left ({format_duration(self.budget.used_before)} used; the saved plan was "
                       f"{saved.get('planned_steps')} steps)")
        return probe

    def _probe(self) -> Probe:
        """Seconds of the first step's forward / backward passes (no update), of a model save and an evaluation."""
        raw = unwrap(self.model)
        raw.train()
        t = self.clock()
        for micro in range(self.accum):
            batch = to_device(self._micro_batch(0, micro), self.device)
            with self._autocast():
                loss, _ = self.objective.loss(self.model, batch)
            (loss / self.accum).backward()
        step_time = self.clock() - t
        for _, p in self._named_parameters():
            p.grad = None
        t = self.clock()
        with tempfile.TemporaryDirectory(prefix="lmforge-probe-") as tmp:
            self._write_model(Path(tmp), {k: v.detach() for k, v in raw.state_dict().items()})
        save_time = self.clock() - t
        eval_time = 0.0
        if self.evaluate_fn is not None:
            t = self.clock()
            raw.eval()
            with torch.no_grad(), self._autocast():
                self.evaluate_fn(raw)
            raw.train()
            eval_time = self.clock() - t
        return Probe(step=step_time, save=save_time, evaluate=eval_time)

    def _first_plan(self, probe: Probe, step: int, scheduler) -> None:
        assert self.budget is not None
        total = self.budget.first(step, probe, checkpoint_at_end=bool(self.config.save_every))
        self._set_total(broadcast_object(total, self.dist), scheduler, None)
        self._note(f"time budget {format_duration(self.budget.seconds)}: {format_duration(self.budget.left())} left, "
                   f"a step takes ~{probe.step:.3g}s (measured), saving {probe.save:.3g}s, evaluating "
                   f"{probe.evaluate:.3g}s: planned {self.total_steps} steps (warmup "
                   f"{self.config.warmup_for(self.total_steps)}, decay to the end; revised every "
                   f"{self.budget.replan_every} steps)")

    def _revise_plan(self, step: int, scheduler, logger: RunLogger | None) -> None:
        assert self.budget is not None
        total = self.budget.revise(step)
        if self.dist.distributed:  # every process ends at the same step: rank 0's clock decides
            total = broadcast_object(total, self.dist)
        if total is not None and total != self.total_steps:
            self._set_total(total, scheduler, logger)

    def _set_total(self, total: int, scheduler, logger: RunLogger | None) -> None:
        """A new planned length: the schedule's end (and warmup ratio) move, the next step's lr follows at once."""
        self.total_steps = int(total)
        if self.budget is not None:
            self.budget.total = self.total_steps
        cfg = self.config
        for factor in getattr(scheduler, "lr_lambdas", []):
            if hasattr(factor, "total"):
                factor.total, factor.warmup = self.total_steps, cfg.warmup_for(self.total_steps)
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
        if logger is not None and logger.bar is not None:
            logger.bar.total = self.total_steps
            logger.bar.refresh()

    # ------------------------------------------------------------------ Ctrl-C
    @contextmanager
    def _sigint_stops_at_step_boundary(self):
        """The first SIGINT asks the loop to stop after the current step, with a checkpoint; a second one
        raises KeyboardInterrupt at once. Only the main thread can own a signal handler."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        previous_term = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):  # no printing here: a handler may run in the middle of a print
            if self._sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._sigint = True

        def term(signum, frame):  # preemption: checkpoint at the step boundary, then a clean exit
            self._sigterm = True

        self._sigint = self._sigterm = False
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, term)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term if previous_term is not None else signal.SIG_DFL)

    def _interrupted(self) -> tuple[bool, bool]:
        """(stop, preempted): whether any process got Ctrl-C or SIGTERM, and whether SIGTERM (one tiny
        all-reduce per step under torchrun, so all stop together)."""
        if not self.dist.distributed:
            return self._sigint or self._sigterm, self._sigterm
        flag = torch.tensor([float(self._sigint), float(self._sigterm)], device=self.device)
        flag = all_reduce_mean(flag, self.dist)
        return bool(flag.sum() > 0), bool(flag[1] > 0)

    # ------------------------------------------------------------------ restoring
    def _restore(self, path: Path, optimizer, scheduler, *, allow_changes: bool = False) -> dict[str, Any]:
        info, cfg = self.dist, self.config
        loaded = ckpt.load_checkpoint(path, rank=info.rank)
        ts = loaded["trainer_state"]
        self._check_world(path, ts)
        if (loaded["sharded"] is not None) != (cfg.distributed == "fsdp"):
            kind = "a sharded (fsdp)" if loaded["sharded"] is not None else "an unsharded (ddp)"
            raise ConfigError(f"{path} is {kind} checkpoint; resume with --distributed "
                              f"{'fsdp' if loaded['sharded'] is not None else 'ddp'}")
        if loaded["sharded"] is not None:
            from lmforge.train.distributed import load_sharded_state_dicts, sharded_state_dicts

            sharded = sharded_state_dicts(self.model, optimizer)
            ckpt.load_sharded_checkpoint(path, sharded)
            load_sharded_state_dicts(self.model, optimizer, sharded)
        elif is_fsdp(self.model):
            from safetensors.torch import load_file
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, load_file(str(loaded["weights"])),
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            ckpt.load_weights(unwrap(self.model), loaded["weights"])
        if set(loaded["extra"]) != set(self.extra):
            raise ConfigError(
                f"cannot resume from {path}: it holds the objective's network(s) {sorted(loaded['extra']) or 'none'} "
                f"and this run's objective trains {sorted(self.extra) or 'none'} (an rtd run keeps its generator "
                "there); resume with the objective the run was started with, or choose a new --out")
        for name, file in loaded["extra"].items():
            ckpt.load_weights(self.extra[name], file)
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            if loaded["optimizer"] is not None:  # (a sharded checkpoint's came with the model above)
                load_optimizer_state(self.model, optimizer, loaded["optimizer"])
        except (ValueError, KeyError) as err:  # other parameter groups (e.g. an accepted head_lr change)
            raise CheckpointError(f"the optimizer state in {path} does not fit this run's parameter groups ({err}); "
                                  "resume with the saved settings") from None
        scheduler.load_state_dict(loaded["scheduler"])
        for factor in getattr(scheduler, "lr_lambdas", []):  # a longer --max-steps stretches the schedule
            if hasattr(factor, "total"):
                factor.total, factor.warmup = self.total_steps, cfg.warmup_for(self.total_steps)
                if allow_changes:
                    factor.schedule, factor.min_ratio = cfg.schedule, cfg.min_lr_ratio
        if allow_changes:  # the loaded state carries the saved hyperparameters: put the accepted new ones back
            for group, new in zip(optimizer.param_groups, fresh):
                group.update({k: new[k] for k in ("initial_lr", "betas", "eps", "weight_decay") if k in new})
            scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
            for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
        if loaded["rng"] is not None:
            ckpt.set_rng_state(loaded["rng"])
        else:  # a rank the saved run did not have: its own fresh streams (dropout; the data order does not use them)
            seed_everything(cfg.seed + 1_000_003 * info.rank + int(ts["step"]))
        self._note(f"resumed from {path} at step {ts['step']} (epoch {ts['data_position']['epoch']}, "
                   f"micro-step {ts['data_position']['micro_step']}: seeked directly, nothing replayed)")
        return {"step": ts["step"], "best": ts.get("best"), "best_step": ts.get("best_step"),
                "bad_evals": ts.get("bad_evals", 0), "last_eval": ts.get("last_eval", {}),
                "window": ts.get("window", [])}

    def _check_world(self, path: Path, ts: dict[str, Any]) -> None:
        """Another number of processes resumes exactly only with the same global batch (the data position
        and the optimizer state are functions of the step and the global batch, not of the process count)."""
        info = self.dist
        saved = int(ts.get("world_size", info.world_size))
        if saved == info.world_size:
            return
        per_step = int(ts["data_position"]["accumulation_steps"]) * saved
        if per_step != self.accum * info.world_size:
            raise ConfigError(f"cannot resume {path} on {info.world_size} process(es): it ran on {saved} with "
                              f"{per_step} micro-batch(es) of {self.config.batch_size} per step, this run would take "
                              f"{self.accum * info.world_size}; keep the global batch with --global-batch-size "
                              f"{per_step * self.config.batch_size}")
        self._note(f"resume: re-sharding from {saved} to {info.world_size} process(es) (global batch unchanged)")

    def _save_model_dir(self, directory: Path, *, extra: dict[str, Any] | None = None) -> None:
        """A loadable model dir (config.json + model.safetensors + tokenizer), written atomically."""
        model_state, _ = full_state_dicts(self.model, None)
        if self.dist.is_main:
            with ckpt.atomic_dir(directory) as tmp:
                self._write_model(tmp, model_state)
                if extra:
                    (tmp / "best.json").write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")
        barrier(self.dist)

    def _write_model(self, directory: Path, model_state: dict[str, torch.Tensor]) -> None:
        raw = unwrap(self.model)
        if hasattr(raw, "save_pretrained") and not is_fsdp(self.model):
            raw.save_pretrained(directory)
        else:
            ckpt.save_weights(raw, directory, model_state)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(directory)
        if self.save_extra is not None:
            self.save_extra(directory)

    def _save_final(self, state: dict[str, Any]) -> None:
        """The final model at the top of out_dir (each file replaced atomically)."""
        cfg, info = self.config, self.dist
        best_dir, from_best = self.out_dir / "best", None
        if cfg.load_best_at_end and state["best_step"] is not None and (best_dir / ckpt.WEIGHTS_FILE).is_file():
            if is_fsdp(self.model):
                self._note("load_best_at_end is not supported with FSDP; the final model is the last one "
                           f"(the best is in {best_dir})")
            else:
                ckpt.load_weights(unwrap(self.model), best_dir / ckpt.WEIGHTS_FILE)
                from_best = best_dir
        model_state = full_state_dicts(self.model, None)[0] if from_best is None else {}
        if info.is_main:
            staging = self.out_dir / ".tmp-final"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            if from_best is not None:
                _copy_model_dir(from_best, staging)
                if self.save_extra is not None:  # e.g. ELECTRA's generator: as it is now, not as it was then
                    self.save_extra(staging)
            else:
                self._write_model(staging, model_state)
            summary = self._trainer_state(state)
            (staging / ckpt.STATE_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            ckpt.umask_modes(staging)
            ckpt._fsync_tree(staging)
            for item in staging.iterdir():
                target = self.out_dir / item.name
                if item.is_dir() and target.exists():
                    shutil.rmtree(target)
                os.replace(item, target)
            shutil.rmtree(staging, ignore_errors=True)
        barrier(info)

    def _diverged(self, step: int, value: float) -> TrainingDiverged:
        last = ckpt.latest_checkpoint(self.ckpt_dir)
        where = (f"the last good checkpoint is {last} (resume from it with --resume and a lower --lr, more warmup "
                 "or clipping)" if last else "no checkpoint was written before it (set --save-every)")
        return TrainingDiverged(f"the loss became {value} at step {step}; training stopped without applying that "
                                f"step; {where}")


def _copy_model_dir(best: Path, target: Path) -> None:
    """The final model when it is best/'s: its weights hard-linked (written and fsync'd once already, never
    changed in place: every save replaces whole files), its small files copied; best.json stays behind."""
    for item in best.iterdir():
        if not item.is_file() or item.name == "best.json":
            continue
        if item.name == ckpt.WEIGHTS_FILE:
            try:
                os.link(item, target / item.name)
                continue
            except OSError:  # a file system without hard links
                pass
        shutil.copyfile(item, target / item.name)


def _read_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(checkpoint) / ckpt.STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {checkpoint} cannot be read ({err}); delete it to resume from the one "
                              "before") from None


def _metric_summary(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Objective metrics of this process's micro-batches, reduced (counts add, averages weigh)."""
    from lmforge.objectives.base import COUNT_METRICS, reduce_metrics

    reduced = reduce_metrics(items)
    return {k: round(v, 6) for k, v in reduced.items() if k not in COUNT_METRICS and k != "loss"}


def _last_train_loss(out_dir: Path) -> float | None:
    from lmforge.train.logging import read_metrics

    try:
        records = [r for r in read_metrics(out_dir) if r.get("split") == "train"]
    except OSError:
        return None
    return records[-1]["loss"] if records else None


# what rtd's validation reports besides the generator's MLM loss / accuracy
RTD_METRICS = ("disc_loss", "disc_accuracy", "disc_precision", "disc_recall", "replaced_fraction")


def objective_evaluator(objective: Any, source: BatchSourceLike, *, device: torch.device | str = "cpu",
                        max_batches: int | None = None) -> Evaluate:
    """An ``evaluate`` callback for pre-training: loss, perplexity and the objective's accuracies.

    ``source`` should be a non-shuffled validation BatchSource (always read at epoch 0, so the masks and
    pairs are the same at every evaluation). Returns ``loss``, ``perplexity`` (exp of the LM loss: clm
    loss, or the MLM loss for masked objectives), ``mlm_accuracy``, ``nsp_accuracy`` / ``sop_accuracy``
    when the objective reports them, and rtd's discriminator metrics (``disc_accuracy`` ...).
    """
    device = torch.device(device)
    n = source.steps_per_epoch if max_batches is None else min(max_batches, source.steps_per_epoch)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        from lmforge.objectives.base import reduce_metrics

        items = [objective.loss(model, to_device(source.batch(0, i), device))[1] for i in range(n)]
        r = reduce_metrics(items)
        out = {"loss": r["loss"]}
        lm = r.get("clm_loss", r.get("mlm_loss"))
        if lm is not None:
            out["perplexity"] = math.exp(min(lm, 80.0))
        for key in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "sop_loss", "sop_accuracy", *RTD_METRICS):
            if key in r:
                out[key] = r[key]
        return out

    return evaluate


class _ListExamples:
    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, *, seed: int, epoch: int) -> Any:
        return self.items[index]


class _ListObjective:
    name, seq_len = "examples", 0

    def __init__(self, collate: Callable[[Sequence[Any]], Batch]) -> None:
        self.collate = collate

    def examples(self, dataset: Sequence[Any]) -> _ListExamples:
        return _ListExamples(dataset)


def list_source(examples: Sequence[Any], collate: Callable[[Sequence[Any]], Batch], *, batch_size: int,
                seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
    """A BatchSource over in-memory examples (fine-tuning features): seeded order, O(1) seek, rank slices."""
    from lmforge.objectives.base import BatchSource

    return BatchSource(_ListObjective(collate), examples, batch_size=batch_size, seed=seed, rank=rank,
                       world_size=world_size, shuffle=shuffle)


__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "enable_grad_checkpointing",
           "list_source", "objective_evaluator", "seed_everything", "settings_changes", "to_device"]
