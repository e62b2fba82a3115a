"""attention_kind="banded" (GPT-3 / GPT-Neo local layers): equal to dense attention under the band mask, with
every cache form (tuple, preallocated, the compiled static step) and left padding; its bad inputs. HF GPT-Neo
parity: tests/parity/test_hf_gpt_neo.py."""
from __future__ import annotations

import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError
from lmforge.nn.attention.banded import band_mask
from lmforge.nn.attention.dense import AttentionMask


def gpt(**kw) -> ModelConfig:
    fields = dict(family="gpt2", vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, max_positions=64,
                  norm_placement="pre", causal=True, type_vocab_size=0, embedding_norm=False, pad_token_id=None,
                  head="clm", attention_pattern=["dense", "banded"], attention_window=5)
    return Model(ModelConfig(**{**fields, **kw})).eval()


def test_banded_equals_dense_under_the_band_mask():
    """Through whole models: a banded layer = a dense layer whose keys outside the window are masked by hand."""
    torch.manual_seed(0)
    m = gpt()
    ids = torch.randint(0, 60, (2, 23))
    ours = m(ids).logits
    for impl in ("mask", "blocks"):
        other = gpt(sparse_impl=impl)
        other.load_state_dict(m.state_dict())
        torch.testing.assert_close(other(ids).logits, ours, atol=1e-5, rtol=1e-5)
    # independent: the same weights with every layer dense, the band applied as an attention mask by hand
    x = m.body.embeddings(ids, position_ids=torch.arange(23)[None])
    h = m.body.layers[0](x, mask=m.body.attention_mask(None, 2, 23, 0, x.device))[0]
    band = AttentionMask(band_mask(23, 23, 5)[None, None], False)
    dense_layer1 = type(m.body.layers[0])(m.config.replace(attention_pattern=None), layer=0)
    dense_layer1.load_state_dict(m.body.layers[1].state_dict())
    dense_layer1.eval()
    h = dense_layer1(h, mask=band)[0]
    logits = torch.nn.functional.linear(m.body.final_norm(h), m.body.embeddings.word.weight)
    torch.testing.assert_close(ours, logits, atol=1e-5, rtol=1e-5)


def test_kv_cache_forms_equal_full_forward():
    torch.manual_seed(0)
    m = gpt()
    ids = torch.randint(0, 60, (2, 20))
    full = m(ids).logits
    out = m(ids[:, :7], use_cache=True)
    step = m(ids[:, 7:9], past_key_values=out.past_key_values, use_cache=True)
    logits = [out.logits, step.logits]
    past = step.past_key_values
    for t in range(9, 20):
        o = m(ids[:, t:t + 1], past_key_values=past, use_cache=True)
        logits.append(o.logits)
        past = o.past_key_values
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)
    assert past[1][0].shape[2] == 20  # the tuple cache keeps the contract's (B, nh, T_past, hs)


@pytest.mark.parametrize("compile", [False, True])
def test_generate_with_each_cache_equals_no_cache(compile, monkeypatch):
    """The preallocated KVCache (eager) and the fixed-shape static step (compile=True; run uncompiled here, the
    step's own logic: torch.compile itself is tested in tests/generation/test_static.py)."""
    from lmforge.generation import static

    monkeypatch.setattr(static, "compiled_step", lambda: static.decode_step)
    torch.manual_seed(0)
    m = gpt()
    prompt = torch.randint(0, 60, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    ref = m.generate(prompt, attention_mask=mask, max_new_tokens=14, use_cache=False)
    got = m.generate(prompt, attention_mask=mask, max_new_tokens=14, compile=compile)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("fields, match", [
    ({"attention_window": 65}, "attention_window=65 is larger than the context \\(64 positions\\)"),
    ({"causal": False, "norm_placement": "post"}, "'banded' is the local causal window of decoders"),
    ({"attention_window": 0}, "attention_window must be a positive integer"),
])
def test_bad_banded_fields(fields, match):
    with pytest.raises(ConfigError, match=match):
        gpt(**fields)


def test_gpt3_presets_alternate_dense_and_banded():
    c = ModelConfig.from_preset("gpt3-small")
    assert [c.layer_attention_kind(i) for i in range(4)] == ["dense", "banded", "dense", "banded"]
    assert c.attention_window == 256
