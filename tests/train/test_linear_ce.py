"""The fused, chunked vocabulary projection + cross-entropy equals the plain one (value and gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.objectives.losses import causal_lm_loss, causal_lm_loss_from_hidden, linear_cross_entropy


@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_plain_cross_entropy(with_bias):
    torch.manual_seed(0)
    h = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(101, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(101, dtype=torch.float64, requires_grad=True) if with_bias else None
    y = torch.randint(0, 101, (37,))
    y[::5] = -100
    ours = linear_cross_entropy(h, w, y, b, chunk=8)
    (ours * 3).backward()
    grads = [t.grad.clone() for t in (h, w, b) if t is not None]
    for t in (h, w, b):
        if t is not None:
            t.grad = None
    ref = F.cross_entropy(F.linear(h, w, b), y, ignore_index=-100)
    (ref * 3).backward()
    assert torch.allclose(ours, ref, atol=1e-12)
    for g, t in zip(grads, [t for t in (h, w, b) if t is not None]):
        assert torch.allclose(g, t.grad, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(h, w, y, b, chunk=8), ref, atol=1e-12)


def test_causal_shift_matches_causal_lm_loss():
    torch.manual_seed(1)
    h = torch.randn(2, 9, 8)
    w = torch.randn(50, 8)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, 3] = -100
    ref = causal_lm_loss(h @ w.t(), labels)
    assert torch.allclose(causal_lm_loss_from_hidden(h, w, labels, chunk=4), ref, atol=1e-5)
