"""Optimizers, parameter groups and learning-rate schedules.

* ``param_groups``: no weight decay on biases and norm weights (every parameter with fewer than two
  dimensions); the head (``head.*``) may get its own lr; optional layer-wise lr decay (LLRD, ELECTRA /
  "How to fine-tune BERT"): layer i of L gets ``lr * decay**(L - i)``, the embeddings ``decay**(L + 1)``.
* ``build_optimizer``: AdamW (fused kernel when the device supports it) or LAMB (You et al. 2019,
  large-batch BERT / ALBERT pre-training), a few lines below.
* ``build_scheduler``: linear warmup from 0, then linear or cosine decay to ``min_lr_ratio``, or constant; or
  ``triangle``, Cramming's one-cycle (Geiping & Goldstein 2022; JonasGeiping/cramming
  cramming/backend/optimizers/schedulers.py ``get_budget_triangle`` with base_percentage=0.25, falloff=0.25 as
  ``budget-triangle2`` sets them): 0.25 x lr at step 0 rising linearly to lr at 75% of the steps, then to 0.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch

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
    if _fused_supported(params):
        try:
            return torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=config.adam_eps,
                                     weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # an older torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=config.adam_eps,
                             weight_decay=config.weight_decay, foreach=True)


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
    gradients are not multiplied by exactly 1.0 when their norm is within ``max_norm``.

    torch multiplies by the clamped coefficient unconditionally to avoid a device sync; on CPU there is none
    to avoid, and the multiply is a read and a write of every gradient (~2 ms a step for bert-mini). GPU
    gradients and DTensors (FSDP) go through torch's function as they are.
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if (get_total_norm is None or not grads
            or any(type(g) is not torch.Tensor or g.device.type != "cpu" for g in grads)):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = get_total_norm(grads, 2.0)
    if float(float(max_norm) / (total + 1e-6)) < 1.0:  # torch's own coefficient (float32), below its clamp
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


__all__ = ["Lamb", "build_optimizer", "build_scheduler", "clip_grad_norm", "lr_factor", "param_groups"]
