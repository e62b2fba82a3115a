"""The decode fast path: the preallocated KV cache against the tuple cache and a full forward, its bad input,
beam reordering, and packed decode steps (oneDNN / MKL) against plain ones (same tokens, model left as it was)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import InputError
from lmforge.generation import can_pack, generate, step
from lmforge.models.model import Model
from lmforge.nn.attention import KVCache


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    m = Model.from_preset("gpt-tiny", head="clm", vocab_size=97, max_positions=64).eval()
    with torch.no_grad():  # larger weights: peaked, varied next-token choices
        for p in m.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    return m


def test_static_cache_equals_tuple_cache_and_full_forward(model: Model) -> None:
    ids = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=pos).logits
        cache = KVCache.for_model(model, batch=3, capacity=12)
        chunks, past = [], None
        for lo, hi in ((0, 6), (6, 8), (8, 9), (9, 10)):  # a prefill, then 2 tokens, then one at a time
            a = model(ids[:, lo:hi], attention_mask=mask[:, :hi], position_ids=pos[:, lo:hi], past_key_values=cache)
            b = model(ids[:, lo:hi], attention_mask=mask[:, :hi], position_ids=pos[:, lo:hi], past_key_values=past,
                      use_cache=True)
            past = b.past_key_values
            assert a.past_key_values is cache and cache.length == hi
            # same arithmetic in another memory layout: rounding only (logits reach ~7.5 here; 1e-5 absolute
            # failed once in a full run, when the thread count changed the GEMM blocking)
            torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-5)
            chunks.append(a.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(chunks, 1)[real], full[real], atol=1e-4, rtol=1e-5)
    assert len(cache) == model.config.num_layers
    torch.testing.assert_close(cache[1][0], past[1][0], atol=1e-6, rtol=0)  # tuple-style read of layer 1's keys


def test_static_cache_full_and_reorder(model: Model) -> None:
    cache = KVCache.for_model(model, batch=2, capacity=5)
    ids = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(ids, past_key_values=cache)
        with pytest.raises(InputError, match="KV cache holds 5 positions and 4 are used; 2 more do not fit"):
            model(ids[:, :2], past_key_values=cache)
        assert cache.length == 4  # nothing was written
        keys = cache[0][0].clone()
        cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache[0][0], keys[[1, 1]])


def test_packed_decode_same_tokens_and_model_restored(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    if not can_pack(model):
        pytest.skip("this torch has no MKL")
    monkeypatch.setattr(step, "PACK_MIN_WEIGHTS", 0)  # pack the tiny model's layers too
    ids = torch.randint(3, 97, (4, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[2, :3] = 0
    kw = dict(attention_mask=mask, max_new_tokens=12, return_scores=True)
    packed = generate(model, ids, pack_weights=True, **kw)
    plain = generate(model, ids, pack_weights=False, **kw)
    reference = generate(model, ids, use_cache=False, **kw)
    assert torch.equal(packed.tokens, plain.tokens) and torch.equal(packed.tokens, reference.tokens)
    torch.testing.assert_close(packed.scores, plain.scores, atol=1e-5, rtol=0)
    beams = generate(model, ids, attention_mask=mask, max_new_tokens=6, num_beams=2, pack_weights=True)
    assert torch.equal(beams, generate(model, ids, attention_mask=mask, max_new_tokens=6, num_beams=2,
                                       pack_weights=False))
    # generate leaves no patched forward behind: the layers run their own Linear.forward again
    assert not any("forward" in m.__dict__ for m in model.modules())
    x = torch.randn(4, 1, model.config.hidden_size)
    layer = model.body.layers[0].attn.qkv
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_pack_weights_needs_a_cpu_float32_model(model: Model) -> None:
    ids = torch.randint(3, 97, (2, 4))
    doubled = Model.from_preset("gpt-tiny", head="clm", vocab_size=97, max_positions=64).double().eval()
    with pytest.raises(InputError, match="pack_weights=True needs a float32 model on CPU"):
        generate(doubled, ids, max_new_tokens=2, pack_weights=True)
    assert generate(doubled, ids, max_new_tokens=2, return_prompt=False).shape == (2, 2)  # automatic: not packed


def test_packed_linear_is_f_linear_and_its_copies_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """PackedLinear == F.linear up to fp32 rounding for one row (MKL), several rows (oneDNN, any count) and a
    prompt (plain); the packed copy is made once, reused by later calls, remade after an in-place update
    of the weight, and dropped by release_packed."""
    layer = torch.nn.Linear(96, 200)
    if not can_pack(torch.nn.Sequential(layer)):
        pytest.skip("no oneDNN / MKL in this torch build")
    made = []
    reorder = torch.ops.mkldnn._reorder_linear_weight

    def counting(weight, rows):
        made.append(rows)
        return reorder(weight, rows)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", counting)
    packed = step.PackedLinear(layer.weight, layer.bias)
    with torch.no_grad():
        for shape in ((1, 96), (1, 1, 96), (3, 96), (5, 1, 96), (2, 7, 96)):
            x = torch.randn(shape)
            torch.testing.assert_close(packed(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
        assert made == [3]  # one oneDNN copy served 3 and 5 rows
        step.PackedLinear(layer.weight, layer.bias)(torch.randn(4, 96))  # a new generate call: reused
        assert made == [3]
        layer.weight.mul_(2)  # trained further: the copy follows
        x = torch.randn(4, 96)
        torch.testing.assert_close(packed(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
        assert made == [3, 4]
    step.release_packed(torch.nn.Sequential(layer))
    assert layer.weight not in step._PACKS
