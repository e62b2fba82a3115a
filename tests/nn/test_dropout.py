"""``lmforge.nn.dropout.Dropout``: keep rate 1 - p, kept values scaled by 1 / (1 - p), the fused residual,
gradients through the mask; identity in eval mode. The mask's 16-bit numbers: every one of the four a 64-bit
draw gives is uniform (drop rates, a chi-square over its 2^16 values against scipy), the expectation is exact,
the bits replay from torch's default generator, and probabilities 15 bits cannot hold take float32 uniforms."""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from lmforge.nn.dropout import Dropout, drop_threshold, keep_mask, keep_scale, random_bits


def test_dropout_rate_scale_residual_and_gradient() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.randn(1000, 1000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002  # 1M draws: sd 0.0003
    scale = 2 ** 15 / (2 ** 15 - 3277)  # p = 0.1 is drawn as 3277 / 2^15 = 0.1000061
    torch.testing.assert_close(y[kept], x[kept] * scale)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)

    r = torch.randn(1000, 1000)
    torch.manual_seed(1)
    fused = drop(x, residual=r)
    torch.manual_seed(1)
    plain = r + drop(x)
    torch.testing.assert_close(fused, plain)

    drop.eval()
    assert torch.equal(drop(x), x) and torch.equal(drop(x, residual=r), r + x)


def test_mask_numbers_uniform_in_every_slot_and_expectation_exact() -> None:
    torch.manual_seed(0)
    n = 4 * 2 ** 20
    # the 16-bit numbers themselves, as keep_mask reads them (slot i = int16 i of each 64-bit draw); 2^20 draws
    bits = random_bits(n // 4)
    numbers = bits.view(torch.int16).view(-1, 4).long() + 2 ** 15  # [0, 2^16)
    for slot in range(4):
        counts = torch.bincount(numbers[:, slot], minlength=2 ** 16).double()
        assert counts.numel() == 2 ** 16 and stats.chisquare(counts.numpy()).pvalue > 1e-4, slot  # 16 a cell
    for p in (0.1, 0.25, 0.5, 0.9):
        torch.manual_seed(1)
        m = keep_mask(torch.empty(n), p)
        k = drop_threshold(p)
        assert k is not None and abs(k / 2 ** 15 - p) < 2 ** -16
        assert m.unique().tolist() == [0.0, 1.0]
        assert keep_scale(p) == 2 ** 15 / (2 ** 15 - k)
        dropped = (m == 0).view(-1, 4).double().mean(0)  # each slot alone: sd ~ 0.0005 at p = 0.5
        assert (dropped - k / 2 ** 15).abs().max() < 0.003, (p, dropped)
        assert abs(m.double().mean().item() * keep_scale(p) - 1.0) < 0.003  # dropout keeps the mean
    # the mask's shape, a size that is not a multiple of four, bf16
    m = keep_mask(torch.empty(3, 5, 7, dtype=torch.bfloat16), 0.1)
    assert m.shape == (3, 5, 7) and m.dtype == torch.bfloat16 and set(m.unique().tolist()) <= {0.0, 1.0}


def test_bits_replay_from_the_default_generator_with_any_thread_count() -> None:
    threads = torch.get_num_threads()
    n = 2 ** 16
    try:
        draws = []
        for t in (1, 2, 1):
            torch.set_num_threads(t)
            torch.manual_seed(3)
            draws.append((random_bits(n), random_bits(n)))
    finally:
        torch.set_num_threads(threads)
    for a, b in draws[1:]:  # the default generator's state alone decides the numbers
        assert torch.equal(a, draws[0][0]) and torch.equal(b, draws[0][1])
    a, b = draws[0]
    assert (a == b).sum() == 0  # each call seeds its own stream from the advancing default generator
    torch.manual_seed(3)  # the layout: one SFC64 stream per call, seeded by one int64 draw
    seed = int(torch.empty((), dtype=torch.int64).random_())
    assert torch.equal(a, torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64)))
    assert (a < 0).any()  # all 64 bits: torch's int64 random_() alone would leave the sign bit 0
    for bit in (0, 31, 62, 63):  # each bit set half the time: sd 0.002
        assert abs(((a >> bit) & 1).double().mean().item() - 0.5) < 0.01, bit
    assert random_bits(0).shape == (0,)
    state = torch.get_rng_state()  # exact resume: the checkpointed generator state replays the masks
    first = keep_mask(torch.empty(1000), 0.1)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask(torch.empty(1000), 0.1), first)


def test_probabilities_15_bits_cannot_hold_use_float_uniforms() -> None:
    assert drop_threshold(0.1) == 3277 and drop_threshold(0.5) == 2 ** 14
    for p in (0.0, 1e-5, 0.001, 0.9999, 1.0):
        assert drop_threshold(p) is None, p
    torch.manual_seed(0)
    m = keep_mask(torch.empty(2 ** 20), 0.001)  # float32 path: scale 1 / (1 - p) exactly
    assert m.unique().tolist() == [0.0, 1.0] and keep_scale(0.001) == 1 / (1 - 0.001)
    assert abs((m == 0).double().mean().item() - 0.001) < 0.0002


def test_bf16_dropout_scales_in_float() -> None:
    """In bf16 the kept values are x * scale rounded once (bf16 would hold the scale 1/0.9 itself as 1.109)."""
    x = torch.randn(256, 256).bfloat16()
    scale = 2 ** 15 / (2 ** 15 - 3277)
    for residual in (None, torch.zeros(256, 256, dtype=torch.bfloat16)):
        torch.manual_seed(0)
        y = Dropout(0.1).train()(x, residual=residual)
        kept = y != 0
        assert y.dtype == torch.bfloat16 and 0.85 < kept.float().mean().item() < 0.95
        assert torch.equal(y[kept], (x[kept].float() * scale).bfloat16())
