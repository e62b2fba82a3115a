"""Dropout for the body's hot paths: the same function as ``nn.Dropout``, cheaper on CPU.

Each element is dropped with probability ``p`` and the kept ones are scaled by ``1 / (1 - p)``, as
``nn.Dropout`` does. Two things differ, neither in what is trained:

* the keep mask comes from 16-bit integer uniforms: one 64-bit draw is read as four 16-bit numbers, and an
  element is dropped when its number (uniform on [-2^15, 2^15)) is below ``2k - 2^15`` with
  ``k = round(p * 2^15)``. torch's CPU ``bernoulli_`` draws a float64 uniform per element and ``torch.rand``
  a float32 one; on one core the mask of a (64, 300, 300) attention map took 8.5 ms from 15-bit numbers of
  torch's own ``random_``, 19 ms from float32 uniforms and 34 ms from ``bernoulli_`` (docs/finetuning.md,
  "The dropout masks"); the bits now come from numpy's SFC64, seeded by one draw from torch's default
  generator (``random_bits``: half the time of torch's Mersenne Twister, and no ``& 0x7fff`` pass). So the
  drop probability is ``k / 2^15`` (0.1 -> 0.1000061) and the kept elements are scaled by
  ``2^15 / (2^15 - k)``, which keeps the expectation exact; a ``p`` that 15 bits cannot hold within 0.1 %
  (below ~0.015, or within that of 1) keeps the float32 uniforms (2^-24 steps);
* the residual add that follows a dropout is fused into one ``addcmul`` (residual + a * keep * scale):
  one kernel instead of three (scale the mask, multiply, add). Fewer kernels matter most on a shared
  CPU, where every parallel kernel can wait on a descheduled thread.

Every mask's SFC64 stream is seeded from torch's default generator, so seeding and checkpointed RNG state
(exact resume) work as before, with any thread count. Evaluation mode
and ``p = 0`` are the identity (plus the residual add). Off the CPU this is ``F.dropout`` (GPUs fuse it into
one kernel already).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


_BITS = 15  # the drop threshold's resolution: p is drawn as k / 2^15


def random_bits(count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` int64 with all 64 bits uniform. On CPU from numpy's SFC64 (Chris Doty-Humphrey's Small Fast
    Chaotic generator; numpy.random.SFC64), seeded by one draw from torch's default generator: 1.9 ms for 2^20
    draws against 3.6 for torch's serial Mersenne Twister (two threads, 2026-12-05). The numbers depend on
    the default generator's state alone, so seeding and checkpointed RNG state replay them exactly, with any
    thread count. Elsewhere torch's ``random_`` over the full int64 range."""
    device = torch.device(device)
    if device.type != "cpu":
        return torch.empty(count, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    seed = int(torch.empty((), dtype=torch.int64).random_())  # [0, 2^63) from the default generator
    return torch.from_numpy(np.random.SFC64(seed).random_raw(count).view(np.int64))


def drop_threshold(p: float) -> int | None:
    """``k`` with ``k / 2^15`` within 0.1 % of ``p`` (0 < k < 2^15), else None (use float32 uniforms)."""
    k = round(p * 2 ** _BITS)
    return k if 0 < k < 2 ** _BITS and abs(k / 2 ** _BITS - p) <= 1e-3 * min(p, 1.0 - p) else None


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Float 0 / 1 mask shaped like ``like`` (0 / 1 are exact in any dtype): 0 with the drop probability drawn
    for ``p`` (``k / 2^15``, see the module docstring). Dropout is ``x * keep_mask(x, p) * keep_scale(p)``."""
    k = drop_threshold(p)
    if k is None:
        keep = torch.rand(like.shape, device=like.device, dtype=torch.float32).ge_(p)
    else:
        n = like.numel()
        # four int16 per 64-bit draw, each uniform on [-2^15, 2^15): below 2k - 2^15 with probability k / 2^15
        numbers = random_bits((n + 3) // 4, like.device).view(torch.int16)[:n]
        keep = numbers.to(torch.float32).ge_(2 * k - 2 ** _BITS).view(like.shape)
    return keep if like.dtype == torch.float32 else keep.to(like.dtype)  # compared in fp32 even for bf16 inputs


def apply_keep(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * keep * scale``: in float32 the scale goes into the mask (one pass); in a 16-bit dtype it multiplies
    the product as a scalar, since 16 bits would round the scale itself (bf16 holds 1/0.9 as 1.109)."""
    if keep.dtype == torch.float32:
        return x * keep.mul_(scale)
    return (x * keep).mul_(scale)


def keep_scale(p: float) -> float:
    """1 / the keep probability ``keep_mask`` draws for ``p``: the expectation of dropout stays its input."""
    k = drop_threshold(p)
    return 1.0 / (1.0 - p) if k is None else 2 ** _BITS / (2 ** _BITS - k)


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
        scale = keep_scale(self.p)
        if residual is None:
            return apply_keep(x, keep, scale)
        return torch.addcmul(residual, x, keep, value=scale)  # the scalar in float: exact in bf16 too

    def extra_repr(self) -> str:
        return f"p={self.p}"
