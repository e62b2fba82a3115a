"""Dense attention through a tiny model: the explicit-softmax path (attention maps) equals SDPA, padding
gets no attention, and the tuple KV cache (``past_key_values``) equals a full forward."""
from __future__ import annotations

import pytest
import torch

from lmforge import Model

V, B, L = 50, 2, 7


def _ids(*shape: int) -> torch.Tensor:
    return torch.randint(3, V, shape, generator=torch.Generator().manual_seed(0))


def _mask() -> torch.Tensor:
    m = torch.ones(B, L, dtype=torch.long)
    m[1, 5:] = 0
    return m


def test_hidden_states_and_attentions():
    model = Model.from_preset("bert-tiny", vocab_size=V).eval()
    out = model(_ids(B, L), attention_mask=_mask(), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (B, 2, L, L)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(B, 2, L))
    assert out.attentions[0][1, :, :, 5:].detach().abs().max().item() == 0.0  # padding gets no attention
    plain = model(_ids(B, L), attention_mask=_mask())  # SDPA path == explicit softmax path
    torch.testing.assert_close(plain.last_hidden_state, out.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["gpt-tiny", "gpt1"])
def test_kv_cache_matches_full_forward(preset):
    model = Model.from_preset(preset, head="clm", vocab_size=V, num_layers=2, hidden_size=32, num_heads=2,
                              intermediate_size=64).eval()
    ids = _ids(B, 9)
    full = model(ids).logits
    out = model(ids[:, :5], use_cache=True)
    assert len(out.past_key_values) == 2 and out.past_key_values[0][0].shape == (B, 2, 5, 16)
    step = model(ids[:, 5:7], past_key_values=out.past_key_values, use_cache=True)
    last = model(ids[:, 7:], past_key_values=step.past_key_values, use_cache=True)
    cached = torch.cat([out.logits, step.logits, last.logits], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_kv_cache_left_padding_with_position_ids():
    model = Model.from_preset("gpt-tiny", head="clm", vocab_size=V).eval()
    ids = _ids(1, 6)
    ref = model(ids).logits[:, -1]
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 2), torch.ones(1, 6)], dim=1).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(padded[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True)
    nxt = model(padded[:, -1:], attention_mask=mask, position_ids=pos[:, -1:], past_key_values=out.past_key_values)
    torch.testing.assert_close(nxt.logits[:, -1], ref, atol=1e-5, rtol=1e-5)
