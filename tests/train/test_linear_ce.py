"""The causal shift of the fused vocabulary projection + cross-entropy equals causal_lm_loss.

The fused loss itself (value and every gradient, chunk layouts, ignored rows, dtypes, HF GPT-2) is
tested in tests/objectives/test_linear_ce_fused.py."""
from __future__ import annotations

import torch

from lmforge.nn.losses import causal_lm_loss, causal_lm_loss_from_hidden


def test_causal_shift_matches_causal_lm_loss():
    torch.manual_seed(1)
    h = torch.randn(2, 9, 8)
    w = torch.randn(50, 8)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, 3] = -100
    ref = causal_lm_loss(h @ w.t(), labels)
    assert torch.allclose(causal_lm_loss_from_hidden(h, w, labels, chunk=4), ref, atol=1e-5)
