"""attention_kind="bigbird": the pattern's structure (window, globals, r random blocks per query block and head,
drawn per layer without touching numpy's global RNG), the short-sequence fallback said once, the config checks
and the MLM row path. HF parity: tests/parity/test_hf_bigbird.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError
from lmforge.nn.attention.bigbird import bigbird_pattern


def config(**kw) -> ModelConfig:
    fields = dict(family="bigbird", vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, max_positions=1024,
                  attention_kind="bigbird", block_size=8, num_random_blocks=3, hidden_dropout=0.0,
                  attention_dropout=0.0)
    return ModelConfig(**{**fields, **kw})


@pytest.mark.parametrize("length", [1024, 800, 256])
def test_every_query_block_sees_window_globals_and_r_random_blocks(length):
    c = config()
    nb = length // 8
    p = bigbird_pattern(c, layer=1, length=length, training=True)
    assert p.dense_rows == (0, nb - 1)  # the global query blocks see everything
    rows = p.rows.tolist()
    assert rows == list(range(1, nb - 1))
    for h in range(2):
        for r, i in enumerate(rows):
            listed = p.slots[h, r][p.valid[h, r]].tolist()
            window = {j for j in (i - 1, i, i + 1)}
            assert window | {0, nb - 1} <= set(listed), (h, i)
            randoms = listed[-4:-1]  # [globals-first, window..., random x3, global-last]
            assert len(p.slots[h, r]) == 1 + 3 + 3 + 1
            assert not set(randoms) & (window - {0, nb - 1}), (h, i, randoms)  # never inside the window
            assert 0 not in randoms  # HF's rules skip the first global block


def test_random_blocks_differ_by_head_and_layer_and_are_reproducible():
    c = config()
    state = np.random.get_state()
    a0 = bigbird_pattern(c, layer=0, length=800, training=True).slots
    a1 = bigbird_pattern(c, layer=1, length=800, training=True).slots
    again = bigbird_pattern(c, layer=0, length=800, training=True).slots
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global numpy RNG is not touched
    assert torch.equal(a0, again)  # a function of (layer, length): nothing to save for an exact resume
    assert not torch.equal(a0, a1)
    assert not torch.equal(a0[0], a0[1])  # per head


def test_eval_mode_random_slots_hold_block_zero():
    """HF eval mode draws no random blocks: its all-zero table puts block 0 in every random slot."""
    p = bigbird_pattern(config(), layer=0, length=800, training=False)
    assert (p.slots[:, :, 4:7] == 0).all()
    assert (p.counts(2)[:, 1:-1, 0] == 4).all()


def test_fallback_is_said_once_and_matches_dense():
    torch.manual_seed(0)
    sparse = Model(config()).eval()
    dense = Model(config(attention_kind="dense")).eval()
    dense.load_state_dict(sparse.state_dict())  # same parameter names whatever the kind
    ids = torch.randint(3, 60, (2, 50))
    assert sparse.config.sparse_min_length == (3 + 2 + 6) * 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            out = sparse(ids).last_hidden_state
    said = [w for w in caught if "full (dense) attention" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    torch.testing.assert_close(out, dense(ids).last_hidden_state)
    long_ids = torch.randint(3, 60, (2, 200))
    assert (sparse(long_ids).last_hidden_state - dense(long_ids).last_hidden_state).abs().max() > 1e-4


def test_mlm_row_path_equals_full_forward():
    """The MLM training step computes only the masked rows in the last layer; bigbird gathers them."""
    torch.manual_seed(0)
    m = Model(config(head="mlm")).eval()
    ids = torch.randint(3, 60, (2, 200))
    labels = torch.full_like(ids, -100)
    labels[:, ::7] = ids[:, ::7]
    rows = m.body(ids, output_rows=labels != -100).last_hidden_state
    full = m.body(ids).last_hidden_state[labels != -100]
    torch.testing.assert_close(rows, full, atol=1e-5, rtol=1e-5)


def test_attention_maps_come_from_the_pattern():
    torch.manual_seed(0)
    m = Model(config()).eval()
    out = m(torch.randint(3, 60, (1, 200)), output_attentions=True)
    probs = out.attentions[0]  # (1, nh, 200, 200): zero outside the pattern
    p = bigbird_pattern(m.config, layer=0, length=200, training=False)
    allowed = (p.counts(2) > 0).repeat_interleave(8, 1).repeat_interleave(8, 2)[None]
    assert probs[~allowed].abs().max() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2, 200))


@pytest.mark.parametrize("fields, match", [
    ({"causal": True}, "'bigbird' is block-sparse attention for encoders.*use 'banded'"),
    ({"num_window_blocks": 2}, "num_window_blocks=2 must be odd"),
    ({"block_size": 0}, "block_size must be a positive integer"),
    ({"num_random_blocks": -1}, "num_random_blocks must be an integer >= 0"),
    ({"sparse_impl": "triton"}, "sparse_impl='triton' is not one of"),
    ({"sparse_fallback": "warn"}, "sparse_fallback='warn' is not one of"),
    ({"attention_pattern": ["dense", "bigbird", "dense"]}, "attention_pattern has 3 entries"),
    ({"attention_pattern": []}, "attention_pattern must be a non-empty list"),
])
def test_bad_fields_name_themselves(fields, match):
    with pytest.raises(ConfigError, match=match):
        config(**fields)


def test_unknown_kind_in_the_pattern_is_named():
    with pytest.raises(ConfigError, match="attention_pattern='bigbrid'.*Did you mean: bigbird"):
        Model(config(attention_pattern=["dense", "bigbrid"]))


@pytest.mark.parametrize("head", ["seq-cls", "choice"])
def test_cls_only_last_layer_is_the_global_row(head):
    """A classifier's last layer on [CLS] only (Model.cls_only_last_layer): position 0 lies in the opening global
    block, which attends to every key, so the layer computes that row as one dense product; loss, logits and
    every gradient equal the block-sparse layer's (padded batch of 600-800 tokens, training and evaluation)."""
    torch.manual_seed(0)
    # a wide init: peaked attention, so that a wrong row or mask would show in the logits
    model = Model(config(head=head, num_labels=3, max_positions=1024, initializer_range=0.3)).train()
    B = 4
    ids = torch.randint(5, 60, (B, 800), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(B, 800, dtype=torch.long)
    mask[1, 600:] = 0
    mask[3, 700:] = 0
    labels = torch.tensor([0, 2, 1, 0]) if head == "seq-cls" else torch.tensor([1, 0])
    if head == "choice":
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    results = []
    for cls_only in (False, True):
        model.cls_only_last_layer = cls_only
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (ref, g0), (out, g1) = results
    assert out.last_hidden_state.shape[1] == 1 and ref.last_hidden_state.shape[1] == 800
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-5)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-4, msg=name)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask, first_token_only=True).logits,
                                   model(ids, attention_mask=mask).logits, atol=1e-6, rtol=1e-5)
