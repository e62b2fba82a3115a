"""MLM / pre-training loss parity: the lmforge Model loaded from a HF BERT checkpoint gives the same
loss as HF BertForMaskedLM / BertForPreTraining on the same masked batch (same initial weights)."""
from __future__ import annotations

import pytest
import torch

from lmforge.objectives import BatchSource, build_objective

transformers = pytest.importorskip("transformers")
model_module = pytest.importorskip(
    "lmforge.models.model",
    reason="needs the lmforge Model (lmforge/models/model.py, model-core issue) with its HF BERT conversion")


def hf_bert(cls, tmp_path, vocab_size: int):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    hf = cls(cfg).eval()
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize(("objective", "hf_class", "head"), [
    ("mlm", "BertForMaskedLM", "mlm"),
    ("mlm+nsp", "BertForPreTraining", "pretraining"),
])
def test_loss_matches_hf(objective, hf_class, head, bert_tok, bert_train, tmp_path) -> None:
    hf = hf_bert(getattr(transformers, hf_class), tmp_path, len(bert_tok))
    ours = model_module.Model.from_pretrained(tmp_path, head=head).eval()
    obj = build_objective(objective, tokenizer=bert_tok, seq_len=64)
    source = BatchSource(obj, bert_train, batch_size=8, seed=0)
    for step in (0, 1):
        batch = source.batch(0, step)
        with torch.no_grad():
            loss, metrics = obj.loss(ours, batch)
            ref = hf(**batch).loss
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
        assert 0.0 <= float(metrics["mlm_accuracy"]) <= 1.0
