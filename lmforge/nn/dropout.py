"""Dropout for the body's hot paths: the same function as ``nn.Dropout``, cheaper on CPU.

Each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, exactly as ``nn.Dropout``.
Two things differ, neither in what is trained:

* the keep mask comes from float32 uniforms (``rand >= p``, as torch's CUDA dropout kernel draws it)
  instead of ``bernoulli_``, whose CPU kernel draws a float64 uniform per element: cheaper (measured in
  docs/pretraining.md, "What changed"), and the generator is the serial part of a dropout on CPU. The comparison runs in place, so the mask is
  a float 0 / 1 tensor (float x float multiplies vectorize; float x bool ones do not);
* the residual add that follows a dropout is fused into one ``addcmul`` (residual + a * keep * scale):
  one kernel instead of three (scale the mask, multiply, add). Fewer kernels matter most on a shared
  CPU, where every parallel kernel can wait on a descheduled thread.

The uniforms come from torch's default generator, so seeding and checkpointed RNG state (exact resume)
work as before. Evaluation mode and ``p = 0`` are the identity (plus the residual add). Off the CPU this
is ``F.dropout`` (GPUs fuse it into one kernel already).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Float 0 / 1 mask shaped like ``like``: 1 with probability ``1 - p`` (float32 uniforms, 2^-24 steps)."""
    keep = torch.rand(like.shape, device=like.device, dtype=torch.float32).ge_(p)  # fp32 even for bf16 inputs
    return keep if like.dtype == torch.float32 else keep.to(like.dtype)  # 0 / 1 are exact in any dtype


class Dropout(nn.Module):
    """``nn.Dropout(p)`` with an optional fused residual: ``forward(x, residual)`` = ``residual + dropout(x)``.

    No parameters or buffers: a drop-in for ``nn.Dropout`` in state dicts.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x if residual is None else residual + x
        if x.device.type != "cpu":  # GPUs have a fused dropout kernel (bernoulli + scale in one pass)
            y = F.dropout(x, self.p, training=True)
            return y if residual is None else residual + y
        keep = keep_mask(x, self.p)
        scale = 1.0 / (1.0 - self.p)
        if residual is None:
            return x * keep.mul_(scale)
        return torch.addcmul(residual, x, keep, value=scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
