"""The block-sparse machinery (nn/attention/sparse.py) on its own: the gathered-blocks path, the dense-mask
reference and FlexAttention give the same outputs; gradients pass gradcheck in float64; a repeated key block
counts twice in the softmax (HF BigBird's eval mode)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.nn.attention.banded import band_mask, banded_pattern
from lmforge.nn.attention.bigbird import bigbird_pattern
from lmforge.nn.attention.sparse import (BlockPattern, blocks_attention, dense_bias, flex_available, flex_block_mask,
                                         log_count_mod, mask_attention, run_flex)


def tiny_bigbird(**kw) -> ModelConfig:
    fields = dict(family="bigbird", vocab_size=50, hidden_size=8, num_layers=2, num_heads=2, max_positions=64,
                  attention_kind="bigbird", block_size=2, num_random_blocks=1)
    return ModelConfig(**{**fields, **kw})


def qkv(B: int, nh: int, T: int, hs: int, *, dtype=torch.float32, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, nh, T, hs, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3))


def padding(B: int, T: int, real: list[int]) -> torch.Tensor:
    return torch.arange(T)[None, :] < torch.tensor(real)[:, None]


def naive(q, k, v, allowed, scale):
    """Independent reference: softmax over the allowed keys by explicit loops over (batch, head, query)."""
    out = torch.zeros_like(q)
    B, nh, T, _ = q.shape
    for b in range(B):
        for h in range(nh):
            for i in range(T):
                keys = allowed[b, h, i].nonzero().flatten()
                w = ((q[b, h, i] @ k[b, h, keys].T) * scale).softmax(-1)
                out[b, h, i] = w @ v[b, h, keys]
    return out


@pytest.mark.parametrize("training", [False, True])
def test_bigbird_paths_agree_and_repeats_count_twice(training):
    """eval: the r random slots hold block 0, so block 0 weighs 1 + r in the non-global rows; every path does it."""
    c = tiny_bigbird(num_random_blocks=2)
    T = 24  # 12 blocks of 2 > (5 + 4) blocks
    pattern = bigbird_pattern(c, layer=1, length=T, training=training)
    q, k, v = qkv(2, 2, T, 4)
    kp = padding(2, T, [T, 19])
    blocks = blocks_attention(q, k, v, pattern, key_padding=kp, scale=0.5)
    mask, _ = mask_attention(q, k, v, dense_bias(pattern, 2, kp, q.dtype), scale=0.5)
    torch.testing.assert_close(blocks, mask, atol=1e-5, rtol=1e-5)
    counts = pattern.counts(2)
    assert (counts[:, 1:-1, 0] >= 1).all()
    if not training:
        assert (counts[:, 1:-1, 0] == 3).all()  # global + 2 random slots, all block 0
    # the reference by hand: a key block listed n times is n copies of its keys
    rep = counts.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (nh, T, T)
    ref = torch.zeros_like(q)
    for b in range(2):
        for h in range(2):
            for i in range(T):
                keys = torch.cat([torch.full((int(rep[h, i, j]),), j) for j in range(T) if kp[b, j]])
                w = ((q[b, h, i] @ k[b, h, keys].T) * 0.5).softmax(-1)
                ref[b, h, i] = w @ v[b, h, keys]
    torch.testing.assert_close(blocks, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not flex_available(), reason="torch without flex_attention")
def test_flex_matches_blocks():
    c = tiny_bigbird(num_random_blocks=2)
    T, bs = 32, 2
    pattern = bigbird_pattern(c, layer=0, length=T, training=False)
    q, k, v = qkv(2, 2, T, 4)
    kp = padding(2, T, [T, 27])
    counts = pattern.counts(2)
    attended = counts > 0

    def mask_mod(b, h, q_idx, kv_idx):
        return attended[h, q_idx // bs, kv_idx // bs] & kp[b, kv_idx]
    block_mask = flex_block_mask(attended, block_size=bs, seq_len=T, mask_mod=mask_mod, batch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            y = run_flex(q, k, v, block_mask, scale=0.5, score_mod=log_count_mod(counts.clamp(min=1).float().log(), bs))
    torch.testing.assert_close(y, blocks_attention(q, k, v, pattern, key_padding=kp, scale=0.5), atol=1e-5, rtol=1e-5)


def test_band_pattern_is_the_causal_window():
    """Chunks of the window over (previous, own) chunk equal the band mask (i - w < j <= i), checked by loops."""
    T, w = 24, 6
    q, k, v = qkv(2, 2, T, 4)
    allowed = band_mask(T, T, w)
    for i in range(T):
        assert allowed[i].nonzero().flatten().tolist() == list(range(max(0, i - w + 1), i + 1))
    got = blocks_attention(q, k, v, banded_pattern(T, w), key_padding=None, scale=0.5)
    torch.testing.assert_close(got, naive(q, k, v, allowed.expand(2, 2, T, T), 0.5), atol=1e-5, rtol=1e-5)


def test_bottom_right_band_for_cached_queries():
    m = band_mask(2, 10, 4)  # queries at positions 8, 9 of 10 keys
    assert m[0].nonzero().flatten().tolist() == [5, 6, 7, 8]
    assert m[1].nonzero().flatten().tolist() == [6, 7, 8, 9]


def _check(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_bigbird_blocks_and_mask(training):
    c = tiny_bigbird()
    T = 16  # 8 blocks of 2 > (5 + 2) blocks
    pattern = bigbird_pattern(c, layer=0, length=T, training=training)
    q, k, v = qkv(1, 2, T, 3, dtype=torch.float64, grad=True)
    kp = padding(1, T, [13])
    _check(lambda q, k, v: blocks_attention(q, k, v, pattern, key_padding=kp, scale=0.7), q, k, v)
    bias = dense_bias(pattern, 2, kp, torch.float64)
    _check(lambda q, k, v: mask_attention(q, k, v, bias, scale=0.7)[0], q, k, v)


def test_gradcheck_band():
    T, w = 10, 4  # not a multiple of the window: the module pads; here the pattern over 12
    pattern = banded_pattern(12, w)
    q, k, v = qkv(1, 2, 12, 3, dtype=torch.float64, grad=True)
    kp = padding(1, 12, [10])
    _check(lambda q, k, v: blocks_attention(q, k, v, pattern, key_padding=kp, scale=0.7), q, k, v)


def test_module_gradients_equal_across_impls():
    """A whole tiny BigBird model in float64: the same loss and parameter gradients from blocks and mask."""
    from lmforge import Model

    grads = {}
    for impl in ("blocks", "mask"):
        torch.manual_seed(0)
        m = Model(tiny_bigbird(sparse_impl=impl, hidden_dropout=0.0, attention_dropout=0.0)).double().train()
        ids = torch.randint(3, 50, (2, 21), generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 21, dtype=torch.long)
        mask[1, 17:] = 0
        m(ids, attention_mask=mask).last_hidden_state[mask.bool()].pow(2).sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert grads["blocks"].keys() == grads["mask"].keys() and len(grads["blocks"]) > 10
    for name, g in grads["blocks"].items():
        torch.testing.assert_close(g, grads["mask"][name], atol=1e-10, rtol=1e-8, msg=name)


def test_sdpa_reference_of_blocks_without_duplicates():
    """Training-mode pattern, no padding: the gathered path equals dense SDPA under a 0/1 block mask."""
    c = tiny_bigbird(num_random_blocks=2)
    T = 40
    pattern = bigbird_pattern(c, layer=3, length=T, training=True)
    counts = pattern.counts(2)
    q, k, v = qkv(1, 2, T, 4)
    allowed = (counts > 0).repeat_interleave(2, 1).repeat_interleave(2, 2)[None]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=0.5)
    assert not (counts > 1).any()  # HF's general plan never draws a window or global block
    torch.testing.assert_close(blocks_attention(q, k, v, pattern, key_padding=None, scale=0.5), ref,
                               atol=1e-5, rtol=1e-5)


def test_pattern_of_head_independent_blocks():
    p = BlockPattern(2, 3, (), torch.arange(3), torch.tensor([[[0, 0], [0, 1], [1, 2]]]),
                     torch.tensor([[[False, True], [True, True], [True, True]]]))
    assert p.counts(2)[0].tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
