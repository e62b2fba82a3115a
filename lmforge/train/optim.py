"""Optimizers, parameter groups and learning-rate schedules.

* ``param_groups``: no weight decay on biases and norm weights (every parameter with fewer than two
  dimensions); the head (``head.*``) may get its own lr; optional layer-wise lr decay (LLRD, ELECTRA /
  "How to fine-tune BERT"): layer i of L gets ``lr * decay**(L - i)``, the embeddings ``decay**(L + 1)``.
* ``build_optimizer``: AdamW (fused kernel when the device supports it) or LAMB (You et al. 2019,
  large-batch BERT / ALBERT pre-training), a few lines below. Its AdamW also takes the row-sparse gradient of
  an ``nn.Embedding(sparse=True)`` (``SparseRows``), with torch's AdamW result on the dense gradient.
* ``build_scheduler``: linear warmup from 0, then linear or cosine decay to ``min_lr_ratio``, or constant; or
  ``triangle``, Cramming's one-cycle (Geiping & Goldstein 2022; JonasGeiping/cramming
  cramming/backend/optimizers/schedulers.py ``get_budget_triangle`` with base_percentage=0.25, falloff=0.25 as
  ``budget-triangle2`` sets them): 0.25 x lr at step 0 rising linearly to lr at 75% of the steps, then to 0.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam  # the functional form of torch.optim.Adam / AdamW.step (SparseRows)

from lmforge.train.config import TrainConfig

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _depth(name: str, num_layers: int) -> int:
    """How many layers sit above this parameter (0 for the head / pooler / final norm)."""
    m = _LAYER.search(name)
    if m:
        return num_layers - int(m.group(1))
    if "embeddings." in name:
        return num_layers + 1
    return 0


def param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], *, lr: float, weight_decay: float,
                 head_lr: float | None = None, layer_lr_decay: float = 1.0,
                 num_layers: int | None = None) -> list[dict]:
    """Optimizer parameter groups keyed by (lr, decayed or not); each group records its names.

    ``named`` is ``model.named_parameters()`` (plus any extra modules, prefixed). ``num_layers`` is
    needed for layer-wise decay; it defaults to the number of distinct ``layers.{i}`` found.
    """
    named = [(n, p) for n, p in named if p.requires_grad]
    if num_layers is None:
        found = {int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))}
        num_layers = max(found) + 1 if found else 0
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in named:
        if name.startswith("head.") and head_lr is not None:
            group_lr = head_lr
        else:
            group_lr = lr * layer_lr_decay ** _depth(name, num_layers)
        decay = p.ndim >= 2  # biases and LayerNorm / RMSNorm weights are 1-D: never decayed
        key = (group_lr, decay)
        g = groups.setdefault(key, {"params": [], "names": [], "lr": group_lr,
                                    "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam's update scaled per tensor by the trust ratio ||w|| / ||update|| (You et al., 2019)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


class _Rows:
    """The rows of one table that have AdamW moments (a gradient row since the state was made), in the order
    they came, and each row's place in that order (-1: none)."""

    def __init__(self, num_rows: int, device: torch.device, have: torch.Tensor | None = None) -> None:
        self.slot = torch.full((num_rows,), -1, dtype=torch.long, device=device)
        self.index = torch.empty(0, dtype=torch.long, device=device)
        if have is not None:
            self.add(have)

    def add(self, rows: torch.Tensor) -> None:
        """Take in ``rows`` (unique row numbers), the new ones at the end."""
        new = rows[self.slot[rows] < 0]
        if new.numel():
            self.slot[new] = torch.arange(self.index.numel(), self.index.numel() + new.numel(), device=new.device)
            self.index = torch.cat([self.index, new])


class SparseRows:
    """Row-sparse gradients (``nn.Embedding(sparse=True)``: the batch's rows only) for torch's Adam / AdamW,
    with the result the optimizer gives on the same gradient made dense, bit for bit.

    Why: a dense word-table gradient is a 30,522 x H block per step, zero but for the batch's few hundred rows,
    which the embedding backward fills, clipping reads twice and AdamW reads with three more tables and writes
    with two (memory traffic that HF's Trainer pays too: ~9 ms of a ~65 ms CoLA step on bert-mini, two
    threads). What is exact: AdamW (decoupled decay) moves a row whose moments are zero (no gradient since its
    state was made; g = 0 every step) by the decay alone, ``w *= 1 - lr wd`` (the fused kernel then subtracts
    ``step_size * 0 / (0 + eps)`` = 0), so one multiply of the whole table plus AdamW on the rows that have
    moments (gathered, updated by torch's own kernel, written back) is the whole update. The rows with moments
    are tracked as gradients arrive (rebuilt from the moments after ``load_state_dict``). Where that does not
    hold or does not pay (L2-coupled Adam with weight decay, tensor lr, capturable / differentiable groups, a
    grad scaler's inf check, the optimizer's first step on the table, more than ``GATHER_FRACTION`` of the
    rows with moments) the gradient is made dense and the optimizer runs as usual. Installed through the
    optimizer's step and load-state hooks (the class itself is torch's)."""

    GATHER_FRACTION = 0.5  # above: the dense step (in a fine-tuning run the gathered one won up to 28 %, SST-2)

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        # no reference back to the optimizer (the hooks get it as an argument): a cycle would keep the optimizer
        # and its state (FSDP's DTensors) alive until a garbage collection, past the process group's teardown
        self.rows: dict[torch.Tensor, _Rows] = {}
        self.held: list[tuple[dict, torch.nn.Parameter, torch.Tensor]] = []
        optimizer.register_step_pre_hook(self._before_step)
        optimizer.register_step_post_hook(self._after_step)
        optimizer.register_load_state_dict_post_hook(lambda opt: self.rows.clear())

    def _rows(self, p: torch.nn.Parameter, state: dict) -> _Rows:
        rows = self.rows.get(p)
        if rows is None:  # a fresh or loaded state: the rows whose moments are not zero
            have = None
            if state:
                nonzero = torch.zeros(p.size(0), dtype=torch.bool, device=p.device)
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in state:
                        nonzero |= state[key].ne(0).flatten(1).any(1)
                have = nonzero.nonzero().squeeze(1)
            rows = self.rows[p] = _Rows(p.size(0), p.device, have)
        return rows

    def _gathers(self, opt: torch.optim.Optimizer, group: dict, state: dict, rows: _Rows,
                 p: torch.nn.Parameter) -> bool:
        # "decoupled_weight_decay" in the group: a torch (>= 2.6) whose functional adam takes it
        return (bool(state) and not torch.is_tensor(group["lr"]) and p.dim() == 2 and not p.is_complex()
                and "decoupled_weight_decay" in group
                and (group["decoupled_weight_decay"] or group["weight_decay"] == 0)
                and not group.get("capturable", False) and not group.get("differentiable", False)
                and getattr(opt, "grad_scale", None) is None and getattr(opt, "found_inf", None) is None
                and rows.index.numel() <= self.GATHER_FRACTION * p.size(0))

    @torch.no_grad()
    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.held = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None or not grad.is_sparse:
                    if grad is not None and p in self.rows:  # a dense gradient gives every row moments
                        del self.rows[p]
                    continue
                grad = grad.coalesce()  # duplicate rows summed (clip_grad_norm may have done it)
                if grad.sparse_dim() != 1:
                    p.grad = grad.to_dense()
                    self.rows.pop(p, None)
                    continue
                state = optimizer.state[p]
                rows = self._rows(p, state)
                rows.add(grad._indices()[0])
                if self._gathers(optimizer, group, state, rows, p):
                    self.held.append((group, p, grad))
                    p.grad = None  # the optimizer's own step skips it; _after_step updates it
                else:
                    p.grad = grad.to_dense()

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        held, self.held = self.held, []
        for group, p, grad in held:
            p.grad = grad
            state = optimizer.state[p]
            rows = self.rows[p]
            index = rows.index
            keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
            part = {k: state[k].index_select(0, index) for k in keys}
            w = p.index_select(0, index)
            g = torch.zeros_like(w).index_copy_(0, rows.slot[grad._indices()[0]], grad._values())
            if group["weight_decay"] != 0:  # every row's decay; the rows with moments are overwritten below
                p.mul_(1 - group["lr"] * group["weight_decay"])
            beta1, beta2 = group["betas"]
            adam(
                [w], [g], [part["exp_avg"]], [part["exp_avg_sq"]], [part["max_exp_avg_sq"]] if group["amsgrad"] else [],
                [state["step"]], amsgrad=group["amsgrad"], has_complex=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                foreach=group["foreach"], capturable=False, differentiable=False, fused=group["fused"],
                decoupled_weight_decay=group["decoupled_weight_decay"])
            p.index_copy_(0, index, w)
            for k in keys:
                state[k].index_copy_(0, index, part[k])


def _fused_supported(params: list[torch.nn.Parameter]) -> bool:
    devices = {p.device.type for p in params}
    floats = all(p.is_floating_point() for p in params)
    return floats and len(devices) == 1 and devices <= {"cuda", "cpu", "xpu", "mps"}


def build_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused when available) or LAMB over ``groups`` (from ``param_groups``)."""
    groups = [dict(g) for g in groups]  # extra keys ("names") stay in the groups: handy when debugging
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.lr, betas=betas, eps=config.adam_eps, weight_decay=config.weight_decay)
    params = [p for g in groups for p in g["params"]]
    optimizer = None
    if _fused_supported(params):
        try:
            optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=config.adam_eps,
                                          weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # an older torch without the fused kernel for this device
            pass
    if optimizer is None:
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=config.adam_eps,
                                      weight_decay=config.weight_decay, foreach=True)
    SparseRows(optimizer)  # takes nn.Embedding(sparse=True) gradients (fine-tuning's word table on CPU)
    return optimizer


def lr_factor(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based), HF's convention."""
    if warmup and step < warmup:
        return step / warmup
    if schedule == "triangle":
        return _triangle(step, total)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def _triangle(step: int, total: int, base: float = 0.25, falloff: float = 0.25) -> float:
    """Cramming's get_budget_triangle: min(base + x (1 - base) / (1 - falloff), (1 - x) / falloff), x = step / total."""
    x = step / max(1, total)
    return max(0.0, min(base + x * (1 - base) / (1 - falloff), (1 - x) / falloff))


class _Factor:
    """A picklable lr lambda (LambdaLR stores callable objects' state in its state_dict)."""

    def __init__(self, total: int, warmup: int, schedule: str, min_ratio: float) -> None:
        self.total, self.warmup, self.schedule, self.min_ratio = total, warmup, schedule, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, total=self.total, warmup=self.warmup, schedule=self.schedule,
                         min_ratio=self.min_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup then decay, stepped once per optimizer step."""
    factor = _Factor(total_steps, config.warmup_for(total_steps), config.schedule, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (same norm, same clipped gradients, bit for bit), except that plain CPU
    gradients are not multiplied by exactly 1.0 when their norm is within ``max_norm``, and that row-sparse
    gradients (``nn.Embedding(sparse=True)``, ``SparseRows``) count and are clipped by their rows (summed
    first; the total then differs from the dense gradients' in the float rounding of the sum only).

    torch multiplies by the clamped coefficient unconditionally to avoid a device sync; on CPU there is none
    to avoid, and the multiply is a read and a write of every gradient (~2 ms a step for bert-mini). GPU
    gradients and DTensors (FSDP) go through torch's function as they are.
    """
    params = [p for p in params if p.grad is not None]
    dense, rows = [], []
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # rows summed once (the optimizer's hook finds it coalesced)
            rows.append(p.grad._values())
        else:
            dense.append(p)
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if (get_total_norm is None or not params
            or any(type(p.grad) is not torch.Tensor or p.grad.device.type != "cpu" for p in params)):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = get_total_norm([p.grad for p in dense], 2.0)
    if rows:
        total = torch.linalg.vector_norm(torch.stack([total, *(torch.linalg.vector_norm(v) for v in rows)]))
    coefficient = float(max_norm) / (total + 1e-6)  # torch's own coefficient (float32), below its clamp
    if float(coefficient) < 1.0:
        if dense:
            torch.nn.utils.clip_grads_with_norm_(dense, max_norm, total)
        for v in rows:
            v.mul_(coefficient)
    return total


__all__ = ["Lamb", "SparseRows", "build_optimizer", "build_scheduler", "clip_grad_norm", "lr_factor", "param_groups"]
