"""GPT-Neo against HF transformers: the reference of the ``banded`` kind (its "local" layers) mixed with dense
("global") layers by ``attention_pattern``; q / k / v without bias, unscaled scores. Random HF weights loaded into
lmforge give HF's logits (every sparse_impl, padding, sequences longer than the window), HF's greedy tokens with
the KV cache, and export back; every head HF has."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from encoder_cases import assert_close

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

VOCAB = 99
HEADS = {None: ("GPTNeoModel", "AutoModel"), "clm": ("GPTNeoForCausalLM", "AutoModelForCausalLM"),
         "seq-cls": ("GPTNeoForSequenceClassification", "AutoModelForSequenceClassification"),
         "token-cls": ("GPTNeoForTokenClassification", "AutoModelForTokenClassification"),
         "qa": ("GPTNeoForQuestionAnswering", "AutoModelForQuestionAnswering")}


def build_hf(tmp_path: Path, head: str | None = "clm", **extra: Any) -> Any:
    torch.manual_seed(0)
    kw: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=32, num_layers=4, num_heads=4, max_position_embeddings=96,
                              attention_types=[[["global", "local"], 2]], window_size=8, intermediate_size=37,
                              pad_token_id=0)
    kw.update(extra)
    hf = getattr(transformers, HEADS[head][0])(transformers.GPTNeoConfig(**kw)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    hf.save_pretrained(tmp_path)
    return hf


def ids_and_mask(length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - 9:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("impl", ["auto", "mask", "flex"])
def test_local_and_global_layers_give_hf_logits(impl: str, tmp_path: Path) -> None:
    hf = build_hf(tmp_path)
    ours = Model.from_pretrained(tmp_path, sparse_impl=impl).eval()
    c = ours.config
    assert c.attention_pattern == ["dense", "banded", "dense", "banded"] and c.attention_window == 8
    assert not c.qkv_bias and c.attention_scale == 1.0
    ids, mask = ids_and_mask()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex on CPU says it is not compiled
        assert_close(ours(ids).logits, hf(ids).logits, f"{impl}: logits")
        real = mask.bool()
        assert_close(ours(ids, attention_mask=mask).logits[real], hf(ids, attention_mask=mask).logits[real],
                     f"{impl}: padded logits")


def test_all_local_layers_and_the_window_matters(tmp_path: Path) -> None:
    hf = build_hf(tmp_path, attention_types=[[["local"], 4]], window_size=5)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.attention_kind == "banded" and ours.config.attention_pattern is None
    ids, _ = ids_and_mask(50)
    with torch.no_grad():
        assert_close(ours(ids).logits, hf(ids).logits, "local logits")
        wide = Model.from_pretrained(tmp_path, attention_window=9).eval()
        assert (wide(ids).logits - hf(ids).logits).abs().max() > 1e-3


def test_greedy_generation_with_the_kv_cache(tmp_path: Path) -> None:
    hf = build_hf(tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    prompt = ids_and_mask(12)[0][:1]
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, max_new_tokens=30), ref)


@pytest.mark.parametrize("head", list(HEADS), ids=[h or "base" for h in HEADS])
def test_heads_both_ways(head: str | None, tmp_path: Path) -> None:
    kw = {"num_labels": 3} if head in ("seq-cls", "token-cls") else {}
    hf = build_hf(tmp_path / "hf", head, **kw)
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.family == "gpt-neo" and ours.config.head == head
    ids, mask = ids_and_mask()
    ours.export_hf(tmp_path / "out")
    back, info = getattr(transformers, HEADS[head][1]).from_pretrained(tmp_path / "out", output_loading_info=True)
    assert type(back).__name__ == HEADS[head][0]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    real = mask.bool()
    with torch.no_grad():
        for ref_model in (hf, back.eval()):
            ref, out = ref_model(ids, attention_mask=mask), ours(ids, attention_mask=mask)
            if head is None:
                assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], "hidden")
            elif head == "qa":
                assert_close(out.start_logits[real], ref.start_logits[real], "start")
            elif head == "seq-cls":
                assert_close(out.logits, ref.logits, "seq-cls")
            else:
                assert_close(out.logits[real], ref.logits[real], f"{head} logits")
