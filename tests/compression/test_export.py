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


def test_pruned_gpt_neo_exports_with_hf_parity(tmp_path):
    """GPT-Neo (dense + local layers, no q / k / v bias) from HF, pruned, back to HF: the same logits."""
    from lmforge.models.model import Model

    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4,
                                       max_position_embeddings=64, attention_types=[[["global", "local"], 1]],
                                       window_size=4, intermediate_size=48)
    hf = transformers.GPTNeoForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    model = Model.from_pretrained(tmp_path / "hf").eval()
    assert model.config.attention_pattern == ["dense", "banded"] and not model.config.qkv_bias
    pruned = pruning.prune(model, heads=[[2], [0, 1, 3]], neurons=[list(range(0, 48, 3)), list(range(40))])
    pruned.export_hf(tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        ours = pruned(IDS, attention_mask=MASK).logits
        theirs = back(input_ids=IDS, attention_mask=MASK).logits
        full = hf(input_ids=IDS, attention_mask=MASK).logits
    keep = MASK.bool()
    assert (ours[keep] - theirs[keep]).abs().max() <= 1e-5
    assert (ours[keep] - full[keep]).abs().max() > 1e-3  # the pruned heads / neurons did matter


def test_mlp_pruned_bigbird_exports_with_hf_parity(tmp_path):
    """BigBird (block-sparse at 400 tokens) keeps its heads but prunes MLP neurons; HF computes the same."""
    from lmforge.models.model import Model

    torch.manual_seed(0)
    config = transformers.BigBirdConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=512, block_size=16,
                                        num_random_blocks=2, attention_type="block_sparse", hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    hf = transformers.BigBirdForMaskedLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    model = Model.from_pretrained(tmp_path / "hf").eval()
    pruned = pruning.prune(model, neurons=[list(range(0, 48, 2)), list(range(30))])
    pruned.export_hf(tmp_path / "out")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(8, 99, (1, 400), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = pruned(ids).logits, back(input_ids=ids).logits
        full = hf(input_ids=ids).logits
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - full).abs().max() > 1e-3
