"""``lmforge.nn.dropout.Dropout``: keep rate 1 - p, kept values scaled by 1 / (1 - p), the fused residual,
gradients through the mask; identity in eval mode."""
from __future__ import annotations

import torch

from lmforge.nn.dropout import Dropout


def test_dropout_rate_scale_residual_and_gradient() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.randn(1000, 1000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002  # 1M draws: sd 0.0003
    torch.testing.assert_close(y[kept], x[kept] / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)

    r = torch.randn(1000, 1000)
    torch.manual_seed(1)
    fused = drop(x, residual=r)
    torch.manual_seed(1)
    plain = r + drop(x)
    torch.testing.assert_close(fused, plain)

    drop.eval()
    assert torch.equal(drop(x), x) and torch.equal(drop(x, residual=r), r + x)
