"""Reformer's "lsh" and "local" attention kinds (lmforge/nn/attention/reformer.py) against independent dense
computations, hashing determinism, padding and the KV cache; axial positions. HF parity:
tests/parity/test_hf_reformer.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError, InputError
from lmforge.models.transformer import _warn_padding
from lmforge.nn.attention.dense import AttentionMask
from lmforge.nn.attention.reformer import LocalAttention, LSHAttention


def cfg(**kw) -> ModelConfig:
    fields = dict(family="custom", vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, max_positions=64,
                  norm_placement="pre", causal=True, type_vocab_size=0, embedding_norm=False, pad_token_id=0,
                  head="clm", tie_word_embeddings=False, attention_kind="lsh", lsh_chunk_length=8,
                  local_chunk_length=4, num_buckets=4, hash_seed=3, hidden_dropout=0.0, attention_dropout=0.0)
    return ModelConfig(**{**fields, **kw})


def dense_reference(q, k, v, allowed):
    """Plain softmax attention (float64) under a (T, S) bool mask."""
    s = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
    return s.softmax(-1) @ v


def split(x, nh):
    B, T, H = x.shape
    return x.reshape(B, T, nh, H // nh).transpose(1, 2)


def unit_keys(x):
    return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() / math.sqrt(x.size(-1))


@pytest.mark.parametrize("causal", [True, False])
def test_lsh_within_one_chunk_is_full_shared_qk_attention_without_self(causal):
    """T <= lsh_chunk_length: every query sees every (earlier) key except itself; a token with nothing else
    (the first one of a decoder) sees itself. Exact up to float64 rounding."""
    torch.manual_seed(0)
    attn = LSHAttention(cfg(causal=causal), layer=0).double().eval()
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    out = attn(x, mask=AttentionMask(None, causal))[0]
    qk, v = split(attn.qk(x), 2), split(attn.v(x), 2)
    T = 8
    allowed = ~torch.eye(T, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(T, T, dtype=torch.bool).tril()
        allowed[0, 0] = True
    ref = dense_reference(qk, unit_keys(qk), v, allowed)
    torch.testing.assert_close(out, attn.out(ref.transpose(1, 2).reshape(2, T, 16)), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("num_hashes", [1, 3])
def test_lsh_with_every_token_in_one_bucket_is_chunked_local_attention(num_hashes, monkeypatch):
    """All tokens in one bucket: the sorted order is the original one, so each chunk of 8 attends to itself and
    the previous chunk (minus self): a dense attention under that band. Rounds that agree combine to the same
    output (no de-duplication is needed then)."""
    torch.manual_seed(0)
    attn = LSHAttention(cfg(num_hashes=num_hashes), layer=0).double().eval()
    monkeypatch.setattr(attn, "hash", lambda v, n, pad: (torch.arange(n).repeat_interleave(v.size(2)) * 4)
                        .expand(v.size(0), v.size(1), -1))
    T, c = 24, 8
    x = torch.randn(2, T, 16, dtype=torch.float64)
    out = attn(x, mask=AttentionMask(None, True))[0]
    qk, v = split(attn.qk(x), 2), split(attn.v(x), 2)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & (j >= (i // c - 1) * c) & (i != j)
    allowed[0, 0] = True
    ref = dense_reference(qk, unit_keys(qk), v, allowed)
    torch.testing.assert_close(out, attn.out(ref.transpose(1, 2).reshape(2, T, 16)), atol=1e-12, rtol=1e-10)


def test_local_attention_equals_dense_under_its_band():
    torch.manual_seed(0)
    for causal in (True, False):
        attn = LocalAttention(cfg(causal=causal, attention_kind="local"), layer=0).double().eval()
        T, c = 12, 4
        x = torch.randn(2, T, 16, dtype=torch.float64)
        out = attn(x, mask=AttentionMask(None, causal))[0]
        q, k, v = (split(t, 2) for t in attn.qkv(x).split(16, -1))
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        chunk_i, chunk_j = i // c, j // c
        # own chunk and the previous one; HF wraps around, so the first chunk sees the last in an encoder
        allowed = (chunk_j == chunk_i) | (chunk_j == (chunk_i - 1) % (T // c))
        if causal:
            allowed &= j <= i
        ref = dense_reference(q / math.sqrt(8), k, v, allowed)
        torch.testing.assert_close(out, attn.out(ref.transpose(1, 2).reshape(2, T, 16)), atol=1e-12, rtol=1e-10)


def test_hashing_is_deterministic_under_a_seed_and_leaves_the_generator_alone():
    torch.manual_seed(0)
    attn = LSHAttention(cfg(num_hashes=2), layer=0).eval()
    x = torch.randn(1, 32, 16)
    qk = split(attn.qk(x), 2)
    state = torch.get_rng_state()
    a, b = attn.hash(qk, 2, None), attn.hash(qk, 2, None)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == (1, 2, 64)
    assert a[..., :32].max() < 4 <= a[..., 32:].min()  # round 2 offset by num_buckets
    assert len(a.unique()) > 2  # the vectors really spread over buckets
    other = LSHAttention(cfg(num_hashes=2, hash_seed=4), layer=0)
    assert not torch.equal(other.hash(qk, 2, None), a)
    # factorised buckets [2, 4]: 8 buckets in all
    fact = LSHAttention(cfg(num_buckets=[2, 4]), layer=0).hash(qk, 1, None)
    assert fact.max() < 8 and len(fact.unique()) > 4
    # no seed: a new draw per call
    free = LSHAttention(cfg(hash_seed=None, num_buckets=8), layer=0)
    assert not torch.equal(free.hash(qk, 1, None), free.hash(qk, 1, None))


def test_model_pads_to_the_chunk_multiple_and_padding_does_not_leak():
    """A length that is not a multiple of the chunk (lcm of lsh 8 / local 4) is padded with masked pads: the
    outputs equal those of the same tokens followed by arbitrary masked tokens."""
    torch.manual_seed(0)
    m = Model(cfg(attention_pattern=["lsh", "local"])).eval()
    ids = torch.randint(1, 50, (2, 21))
    _warn_padding.cache_clear()  # one warning per length and process
    with pytest.warns(UserWarning, match="padded to 24"):
        out = m(ids).logits
    assert out.shape == (2, 21, 50)
    longer = torch.cat([ids, torch.randint(1, 50, (2, 3))], 1)
    ref = m(longer, attention_mask=torch.cat([torch.ones(2, 21), torch.zeros(2, 3)], 1).long()).logits[:, :21]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="multiple of its chunk length 8"):
        m.body.layers[0].attn(torch.randn(1, 12, 16), mask=AttentionMask(None, True))


def test_kv_cache_local_works_and_lsh_refuses():
    torch.manual_seed(0)
    m = Model(cfg(attention_kind="local")).eval()
    ids = torch.randint(1, 50, (1, 16))
    full = m(ids).logits
    out = m(ids[:, :9], use_cache=True)
    steps = [out.logits]
    past = out.past_key_values
    for t in range(9, 16):
        out = m(ids[:, t:t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    lsh = Model(cfg()).eval()
    out = lsh(ids[:, :4], use_cache=True)  # computes, caches nothing
    with pytest.raises(InputError, match="no KV cache"):
        lsh(ids[:, 4:5], past_key_values=out.past_key_values, use_cache=True)
    with pytest.raises(InputError, match="no KV cache"):
        lsh.body.layers[0].attn(torch.randn(1, 1, 16), mask=AttentionMask(None, False), past=(ids, ids))
    # generate recomputes the prefix for lsh models: the same tokens as an explicit use_cache=False
    assert torch.equal(lsh.generate(ids[:, :5], max_new_tokens=12),
                       lsh.generate(ids[:, :5], max_new_tokens=12, use_cache=False))


def test_reversible_lsh_model_trains_with_replayed_rotations():
    """No hash seed: the rotations come from torch's generator; the reversible backward replays them, so the
    gradients equal a stored-activation run's (float64)."""
    from lmforge.nn.reversible import run_plain, run_reversible

    torch.manual_seed(0)
    m = Model(cfg(hash_seed=None, reversible=True, num_hashes=2, hidden_dropout=0.1,
                  attention_dropout=0.1)).double().train()
    ids = torch.randint(1, 50, (2, 24))
    blocks = list(m.body.layers)
    mask = m.body.attention_mask(None, 2, 24, 0, torch.device("cpu"))

    def grads(fn):
        m.zero_grad()
        torch.manual_seed(7)
        x = m.body.embeddings(ids, position_ids=torch.arange(24)[None].expand(2, -1))
        y1, y2 = fn(x)
        (torch.cat([y1, y2], -1).cos().sum()).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    ref = grads(lambda x: run_plain(blocks, x, x, mask=mask)[:2])
    rev = grads(lambda x: run_reversible(blocks, x, x, mask=mask))
    assert ref.keys() == rev.keys() and "body.layers.1.attn.qk.weight" in ref
    for name in ref:
        torch.testing.assert_close(rev[name], ref[name], atol=1e-10, rtol=1e-9, msg=name)


def test_axial_positions():
    torch.manual_seed(0)
    m = Model(cfg(attention_kind="local", position_kind="axial", axial_pos_shape=[8, 8],
                  axial_pos_embds_dim=[6, 10])).eval()
    pos = m.body.embeddings.position
    w0, w1 = pos.weights[0], pos.weights[1]
    assert w0.shape == (8, 1, 6) and w1.shape == (1, 8, 10)
    p = torch.tensor([[0, 9, 63]])
    got = pos(p)
    # position 9 = row 1, column 1 of the 8 x 8 grid
    torch.testing.assert_close(got[0, 1], torch.cat([w0[1, 0], w1[0, 1]]))
    torch.testing.assert_close(got[0, 2], torch.cat([w0[7, 0], w1[0, 7]]))
    assert m(torch.randint(0, 50, (1, 20))).logits.shape == (1, 20, 50)
    with pytest.raises(ConfigError, match="multiplies to 48 but max_positions=64"):
        cfg(position_kind="axial", axial_pos_shape=[8, 6], axial_pos_embds_dim=[6, 10])
    with pytest.raises(ConfigError, match="sums to 12"):
        cfg(position_kind="axial", axial_pos_shape=[8, 8], axial_pos_embds_dim=[6, 6])


def test_bad_lsh_configs():
    with pytest.raises(ConfigError, match="even integer"):
        cfg(num_buckets=3)
    with pytest.raises(ConfigError, match="even integer"):
        cfg(num_buckets=[2, 4, 2])
    assert LSHAttention(cfg(num_buckets=None), layer=0).num_buckets(64) == 16  # 2 * 64 / 8


def test_causality_local_strict_lsh_only_through_the_buckets(monkeypatch):
    """local: outputs before position 20 ignore every later token. lsh: its masks are causal, but the buckets of
    later tokens move the chunk boundaries of the sorted order (the paper's and HF's scheme), so earlier outputs
    can change with later tokens; with buckets that do not depend on the tokens it is strictly causal."""
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (1, 32))
    later = ids.clone()
    later[0, 20:] = torch.randint(1, 50, (12,))
    local = Model(cfg(attention_kind="local")).eval()
    assert torch.equal(local(ids).logits[0, :20], local(later).logits[0, :20])
    lsh = Model(cfg(attention_kind="lsh", num_buckets=8, num_hashes=2)).eval()
    assert not torch.allclose(lsh(ids).logits[0, :20], lsh(later).logits[0, :20])  # the buckets moved
    for layer in lsh.body.layers:  # bucket = position mod 4: no token dependence
        monkeypatch.setattr(layer.attn, "hash", lambda v, n, pad: (torch.arange(n * v.size(2)) % 4 + 4 * (
            torch.arange(n * v.size(2)) // v.size(2))).expand(v.size(0), v.size(1), -1))
    torch.testing.assert_close(lsh(ids).logits[0, :20], lsh(later).logits[0, :20], atol=0, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_lsh_dedup_is_softmax_over_the_union_of_every_rounds_keys(causal):
    """lsh_dedup=True (the paper's de-duplication): 3 rounds combine to exactly the softmax over the keys each
    query met in any round, found here by sorting each round in plain Python; without it a key met in several
    rounds weighs more (HF), so the two differ."""
    torch.manual_seed(0)
    c, T, n = 4, 24, 3
    attn = LSHAttention(cfg(causal=causal, lsh_chunk_length=c, num_buckets=4, num_hashes=n, lsh_dedup=True),
                        layer=0).double().eval()
    x = torch.randn(1, T, 16, dtype=torch.float64)
    out = attn(x, mask=AttentionMask(None, causal))[0]
    qk, v = split(attn.qk(x), 2), split(attn.v(x), 2)
    buckets = attn.hash(qk, n, None)[0]  # (nh, n * T): round r's buckets offset by 4 r
    keys = unit_keys(qk)
    ref = torch.zeros_like(v)
    for h in range(2):
        slots = sorted(range(n * T), key=lambda s: (int(buckets[h, s]), s))  # (round, bucket, position) order
        chunks = [[s % T for s in slots[i:i + c]] for i in range(0, n * T, c)]
        seen = [set() for _ in range(T)]
        for g, members in enumerate(chunks):
            window = chunks[g - 1] + members  # the previous chunk, wrapping over every round's chunks
            for i in members:
                seen[i].update(window)
        for i in range(T):
            allowed = [j for j in sorted(seen[i]) if j != i and (j <= i or not causal)]
            if not allowed:
                ref[0, h, i] = v[0, h, i]
                continue
            scores = torch.stack([qk[0, h, i] @ keys[0, h, j] for j in allowed])
            ref[0, h, i] = scores.softmax(0) @ v[0, h, allowed]
    torch.testing.assert_close(out, attn.out(ref.transpose(1, 2).reshape(1, T, 16)), atol=1e-10, rtol=1e-8)
    plain = LSHAttention(attn.config.replace(lsh_dedup=False), layer=0).double().eval()
    plain.load_state_dict(attn.state_dict())
    assert not torch.allclose(plain(x, mask=AttentionMask(None, causal))[0], out)
