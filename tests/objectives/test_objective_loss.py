"""Objective.loss: the loss is the model's, and the metrics (MLM / NSP accuracy, counts) are right.

The model here is HF's BERT behind a thin adapter that speaks the lmforge Model contract (gathered
MLM logits, ``pair_logits``), so the objective's bookkeeping is checked against an independent
reference. tests/objectives/test_mlm_parity.py runs the real lmforge Model.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmforge.objectives import BatchSource, build_objective, reduce_metrics

transformers = pytest.importorskip("transformers")


class ContractAdapter(torch.nn.Module):
    """HF BertForPreTraining / BertForMaskedLM / GPT2LMHeadModel, returning lmforge-style outputs."""

    def __init__(self, hf: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
                return_logits=True):  # the clm objective passes return_logits=False (HF always makes logits)
        if isinstance(self.hf, transformers.GPT2LMHeadModel):
            out = self.hf(input_ids=input_ids, labels=labels)
            return SimpleNamespace(loss=out.loss, logits=out.logits)
        extra = {} if next_sentence_label is None else {"next_sentence_label": next_sentence_label}
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      labels=labels, **extra)
        keep = labels != -100
        if next_sentence_label is None:
            return SimpleNamespace(loss=out.loss, logits=out.logits[keep])
        return SimpleNamespace(loss=out.loss, logits=out.prediction_logits[keep], pair_logits=out.seq_relationship_logits)


def tiny_bert(cls, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128)
    return cls(cfg).eval()


def test_mlm_nsp_loss_and_metrics(bert_tok, bert_train) -> None:
    obj = build_objective("mlm+nsp", tokenizer=bert_tok, seq_len=64)
    hf = tiny_bert(transformers.BertForPreTraining, len(bert_tok))
    model = ContractAdapter(hf)
    batch = BatchSource(obj, bert_train, batch_size=6, seed=0).batch(0, 0)
    loss, metrics = obj.loss(model, batch)
    ref = hf(**batch)
    torch.testing.assert_close(loss, ref.loss)
    keep = batch["labels"] != -100
    mlm_ref = torch.nn.functional.cross_entropy(ref.prediction_logits[keep], batch["labels"][keep])
    nsp_ref = torch.nn.functional.cross_entropy(ref.seq_relationship_logits, batch["next_sentence_label"])
    torch.testing.assert_close(metrics["mlm_loss"], mlm_ref)
    torch.testing.assert_close(metrics["nsp_loss"], nsp_ref)
    acc = (ref.prediction_logits[keep].argmax(-1) == batch["labels"][keep]).float().mean()
    torch.testing.assert_close(metrics["mlm_accuracy"], acc)
    nsp_acc = (ref.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).float().mean()
    torch.testing.assert_close(metrics["nsp_accuracy"], nsp_acc)
    assert int(metrics["masked_tokens"]) == int(keep.sum()) and int(metrics["pairs"]) == 6
    assert int(metrics["tokens"]) == int(batch["attention_mask"].sum())
    assert all(not v.requires_grad for v in metrics.values())
    loss.backward()  # the returned loss is the one to train on
    assert hf.bert.embeddings.word_embeddings.weight.grad is not None


def test_mlm_and_clm_losses(bert_tok, gpt2_tok, bert_train) -> None:
    obj = build_objective("mlm", tokenizer=bert_tok, seq_len=64)
    hf = tiny_bert(transformers.BertForMaskedLM, len(bert_tok))
    batch = BatchSource(obj, bert_train, batch_size=4, seed=0).batch(0, 1)
    loss, metrics = obj.loss(ContractAdapter(hf), batch)
    torch.testing.assert_close(loss, hf(**batch).loss)
    assert "nsp_accuracy" not in metrics and float(metrics["mlm_loss"]) == float(loss.detach())

    clm = build_objective("clm", tokenizer=bert_tok, seq_len=32)
    torch.manual_seed(0)
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(bert_tok), n_embd=32, n_layer=1,
                                                               n_head=2, n_positions=64)).eval()
    batch = BatchSource(clm, bert_train, batch_size=3, seed=0).batch(0, 0)
    loss, metrics = clm.loss(ContractAdapter(gpt), batch)
    torch.testing.assert_close(loss, gpt(input_ids=batch["input_ids"], labels=batch["labels"]).loss)
    assert int(metrics["predicted_tokens"]) == 3 * 31


def test_reduce_metrics_weights_by_counts() -> None:
    a = {"mlm_accuracy": torch.tensor(1.0), "masked_tokens": torch.tensor(30), "loss": torch.tensor(2.0),
         "weight": torch.tensor(30)}
    b = {"mlm_accuracy": torch.tensor(0.0), "masked_tokens": torch.tensor(10), "loss": torch.tensor(4.0),
         "weight": torch.tensor(10)}
    out = reduce_metrics([a, b])
    assert out == {"mlm_accuracy": 0.75, "masked_tokens": 40.0, "loss": 2.5, "weight": 40.0}
