"""Dropout for the body's hot paths: the same function as ``nn.Dropout``, cheaper on CPU.

Each element is dropped with probability ``p`` and the kept ones are scaled by ``1 / (1 - p)``, as
``nn.Dropout`` does. Two things differ, neither in what is trained:

* the keep mask comes from 15-bit integer uniforms: one ``random_()`` over an int64 tensor yields 63
  random bits, read as four 15-bit numbers, and an element is dropped when its number is below
  ``k = round(p * 2^15)``. torch's CPU ``bernoulli_`` draws a float64 uniform per element and ``torch.rand``
  a float32 one; on one core the mask of a (64, 300, 300) attention map takes 8.5 ms this way, 19 ms from
  float32 uniforms and 34 ms from ``bernoulli_`` (docs/finetuning.md, "The dropout masks"). A large mask's
  bits come in two halves from two generators seeded from the default one (``random_bits``). So the drop
  probability is ``k / 2^15`` (0.1 -> 0.1000061) and the
  kept elements are scaled by ``2^15 / (2^15 - k)``, which keeps the expectation exact; a ``p`` that 15 bits
  cannot hold within 0.1 % (below ~0.015, or within that of 1) keeps the float32 uniforms (2^-24 steps);
* the residual add that follows a dropout is fused into one ``addcmul`` (residual + a * keep * scale):
  one kernel instead of three (scale the mask, multiply, add). Fewer kernels matter most on a shared
  CPU, where every parallel kernel can wait on a descheduled thread.

The uniforms come from torch's default generator (a large mask's two half-generators are seeded from it),
so seeding and checkpointed RNG state (exact resume) work as before, with any thread count. Evaluation mode
and ``p = 0`` are the identity (plus the residual add). Off the CPU this is ``F.dropout`` (GPUs fuse it into
one kernel already).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


_BITS = 15  # random_() on int64 gives 63 random bits: four 15-bit numbers a draw
# From this many int64 draws the bits come in two halves from two generators. The second half ran on a helper
# thread when torch had more than one (2^21 draws alone: 13.1 -> 6.9 ms on two threads), but inside a training
# run that thread competed with torch's own for the two cores and the draws took longer (SQuAD on two threads,
# 2026-12-05: 0.85-0.91 s of random_bits a run against 0.73-0.77 s serial), so both halves run here, one after
# the other; the halves stay so that seeded runs keep the masks they drew before.
SPLIT_DRAWS = 2 ** 16


def random_bits(count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` int64 uniform on [0, 2^63) from torch's default generator. On CPU, from SPLIT_DRAWS on, two
    seeds are drawn from it and each seeds a Mersenne Twister for one half. The numbers depend on the default
    generator's state alone (not on the thread count), so seeding and checkpointed RNG state replay them
    exactly."""
    bits = torch.empty(count, dtype=torch.int64, device=device)
    if bits.device.type != "cpu" or count < SPLIT_DRAWS:
        return bits.random_()
    first, second = (torch.Generator().manual_seed(s) for s in torch.empty(2, dtype=torch.int64).random_().tolist())
    half = count // 2
    bits[:half].random_(generator=first)
    bits[half:].random_(generator=second)
    return bits


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
        bits = random_bits((n + 3) // 4, like.device)  # [0, 2^63)
        # four int16 per draw; the top one has 15 random bits (bit 63 is 0), the others 16: keep 15 of each
        numbers = bits.view(torch.int16)[:n].bitwise_and_(2 ** _BITS - 1)
        keep = numbers.to(torch.float32).ge_(k).view(like.shape)
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
