"""Reformer against HF transformers (``ReformerModel``, ``ReformerModelWithLMHead``): random HF weights of small
versions of the google/reformer-crime-and-punishment and google/reformer-enwik8 shapes load into lmforge
(lsh + local layers, reversible blocks, axial positions, factorised buckets, several hash rounds, heads narrower
than hidden_size / num_heads) and give HF's logits in evaluation mode with a fixed hash seed, for lengths that
are and are not a multiple of the chunk length (HF and lmforge both pad); export back gives HF the same model."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

# the released checkpoints' shapes, shrunk: crime-and-punishment = 6 layers local / lsh alternating, 2 heads of 64
# on a 256 hidden size, axial positions, buckets [64, 128], one hash; enwik8 = byte vocabulary, mostly local
# layers with some lsh ones, lsh chunks twice the local ones, 4 hash rounds
CRIME = dict(vocab_size=320, hidden_size=32, num_attention_heads=2, attention_head_size=8, feed_forward_size=64,
             attn_layers=["local", "lsh", "local", "lsh"], axial_pos_embds=True, axial_pos_shape=[8, 16],
             axial_pos_embds_dim=[8, 24], max_position_embeddings=128, lsh_attn_chunk_length=8,
             local_attn_chunk_length=8, num_buckets=[2, 4], num_hashes=1, hidden_act="relu", is_decoder=True,
             hash_seed=5, pad_token_id=0, eos_token_id=2)
ENWIK8 = dict(vocab_size=258, hidden_size=32, num_attention_heads=2, attention_head_size=16, feed_forward_size=64,
              attn_layers=["local", "local", "lsh", "local"], axial_pos_embds=True, axial_pos_shape=[8, 16],
              axial_pos_embds_dim=[8, 24], max_position_embeddings=128, lsh_attn_chunk_length=16,
              local_attn_chunk_length=8, num_buckets=4, num_hashes=4, hidden_act="relu", is_decoder=True,
              hash_seed=11, pad_token_id=0, eos_token_id=2, chunk_size_feed_forward=8)
SHAPES = {"crime": CRIME, "enwik8": ENWIK8}


def build_hf(tmp_path: Path, shape: dict[str, Any], cls: str = "ReformerModelWithLMHead", **extra: Any) -> Any:
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(transformers.ReformerConfig(**{**shape, **extra})).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("length", [32, 27, 8])
def test_lm_logits_equal_hf(name: str, length: int, tmp_path: Path) -> None:
    """32: several chunks; 27: padded to 32 by both; 8: within one chunk (full attention, no hashing; HF
    chunks the feed-forward only at multiples of its chunk size)."""
    shape = SHAPES[name]
    hf = build_hf(tmp_path, shape)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.reversible and ours.config.position_kind == "axial"
    ids = torch.randint(3, shape["vocab_size"], (2, length), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both pad 27 to 32 and say so
        got = ours(ids).logits
        ref = hf(ids).logits
    assert got.shape == ref.shape == (2, length, shape["vocab_size"])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_base_model_with_padding_mask_and_learned_positions(tmp_path: Path) -> None:
    hf = build_hf(tmp_path, {**CRIME, "axial_pos_embds": False, "is_decoder": False}, cls="ReformerModel")
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.head is None and not ours.config.causal
    ids = torch.randint(3, 320, (2, 32), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 32, dtype=torch.long)
    mask[1, 25:] = 0
    with torch.no_grad():
        got = ours(ids, attention_mask=mask).last_hidden_state
        ref = hf(ids, attention_mask=mask).last_hidden_state
    assert got.shape == (2, 32, 64)  # both streams
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_export_back_to_hf(tmp_path: Path) -> None:
    build_hf(tmp_path / "hf", ENWIK8)
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    ours.export_hf(tmp_path / "out")
    again = transformers.ReformerModelWithLMHead.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(3, 258, (1, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, again(ids).logits, atol=2e-5, rtol=1e-4)
    assert again.config.attn_layers == ENWIK8["attn_layers"] and again.config.num_hashes == 4


@pytest.mark.parametrize("layers", [["local", "local"], ["local", "lsh"]])
def test_greedy_generation_equals_hf(layers: list[str], tmp_path: Path) -> None:
    """local layers decode with the (k, v) cache across chunk boundaries; lsh layers recompute the prefix each
    step (generate turns the cache off for them); HF uses its own bucket / hidden-state cache."""
    hf = build_hf(tmp_path, {**CRIME, "attn_layers": layers})
    ours = Model.from_pretrained(tmp_path).eval()
    prompt = torch.randint(3, 320, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, max_new_tokens=20), ref)
