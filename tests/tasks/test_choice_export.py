"""A multiple-choice model made the way `lmforge finetune --task swag` makes it (a pre-trained MLM checkpoint,
its body + a fresh choice head) exports to HF and gives HF's *ForMultipleChoice outputs: the choice head
reads the pooler whenever the body has one (RoBERTa too, although its seq-cls head does not)."""
from __future__ import annotations

import pytest
import torch

from lmforge.models.model import Model
from lmforge.tasks import get_task

transformers = pytest.importorskip("transformers")

VOCAB = 120
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)


class _Vocab:
    """Stands in for the tokenizer: load_model only asks an encoder's tokenizer for its size."""

    def __len__(self) -> int:
        return VOCAB


@pytest.mark.parametrize("preset,extra,hf_class", [
    ("roberta-base", dict(max_positions=66, type_vocab_size=1), "RobertaForMultipleChoice"),
    ("bert-tiny", dict(max_positions=64), "BertForMultipleChoice"),
    ("electra-small", dict(max_positions=64, embedding_size=16), "ElectraForMultipleChoice"),
])
def test_swag_model_from_an_mlm_checkpoint_exports_with_hf_parity(preset, extra, hf_class, tmp_path):
    from lmforge.recipes.finetune import load_model

    torch.manual_seed(0)
    pretrained = Model.from_preset(preset, head="mlm", **TINY, **extra)
    with torch.no_grad():  # random init leaves biases at 0 and norms at 1: noise makes a wrong map visible
        for p in pretrained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pretrained.save_pretrained(tmp_path / "mlm")
    lines: list[str] = []
    model, _ = load_model(str(tmp_path / "mlm"), get_task("swag"), _Vocab(), log=lines.append)
    assert model.config.head == "choice" and "fresh 'choice' head" in lines[0]
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    if pretrained.config.has_pooler:  # BERT, RoBERTa: the classifier reads the pooled output, no dense of its own
        assert not any(k.startswith("head.summary") for k in model.state_dict())
    model.export_hf(tmp_path / "hf")
    hf, info = transformers.AutoModelForMultipleChoice.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert type(hf).__name__ == hf_class
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    hf.eval()
    B, C, L = 2, 4, 9
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (B, C, L), generator=g)
    mask = torch.ones(B, C, L, dtype=torch.long)
    mask[1, :, 6:] = 0  # the second example's endings are padded
    ids[mask == 0] = model.config.pad_token_id
    labels = torch.tensor([3, 1])
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, labels=labels)
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours.logits, ref.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.loss, ref.loss, rtol=1e-4, atol=1e-5)
