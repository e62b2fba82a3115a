"""A pruned model exports to HF zero-padded back to HF's shapes, and transformers computes the same logits."""
from __future__ import annotations

import pytest
import torch

from .conftest import tiny_bert, tiny_gpt
from lmforge.compression import prune as pruning

transformers = pytest.importorskip("transformers")

IDS = torch.randint(5, 1000, (2, 10), generator=torch.Generator().manual_seed(0))
MASK = torch.ones(2, 10, dtype=torch.long)
MASK[0, 7:] = 0


@pytest.mark.parametrize("build, auto", [(tiny_bert, "AutoModelForSequenceClassification"),
                                         (tiny_gpt, "AutoModelForCausalLM")], ids=["bert-seq-cls", "gpt2-clm"])
def test_pruned_model_exports_with_hf_parity(tmp_path, build, auto):
    full = build()
    model = pruning.prune(full, heads=[[1, 3], [0]], neurons=[list(range(0, 48, 2)), [5, 9, 11]])
    model.export_hf(tmp_path)
    hf = getattr(transformers, auto).from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in hf.parameters()) == full.num_parameters()  # the unpruned shapes, zero-padded
    with torch.no_grad():
        ours = model(IDS, attention_mask=MASK).logits
        theirs = hf(input_ids=IDS, attention_mask=MASK).logits
    keep = MASK.bool() if ours.dim() == 3 else slice(None)  # padded positions of a decoder are not compared
    assert (ours[keep] - theirs[keep]).abs().max() <= 1e-5
