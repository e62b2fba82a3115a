"""Distilled students in transformers: the default student of a 12-layer BERT teacher (6 layers from
[0, 2, 4, 7, 9, 11], no segments, no pooler) exports as DistilBertForMaskedLM and, with a classifier, as
DistilBertForSequenceClassification; a TinyBERT-style student (another width, segments kept) exports as
BertForMaskedLM. Same weights -> the same logits in transformers, on a padded batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.recipes.distill import DistillConfig, build_student

transformers = pytest.importorskip("transformers")

VOCAB = 97


def _teacher() -> Model:
    torch.manual_seed(0)
    config = ModelConfig.from_preset("bert-tiny", head="mlm", vocab_size=VOCAB, num_layers=12, hidden_size=32,
                                     num_heads=4, intermediate_size=48, max_positions=40)
    model = Model(config)
    with torch.no_grad():  # biases 0 and norms 1 after init: noise makes a wrong map visible
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return model


def _student(teacher: Model, **kw) -> Model:
    config = DistillConfig(teacher="t", data="d", out="o", **kw)
    student, _ = build_student(config, teacher, head="mlm", log=lambda _: None)
    return student.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


def _load(path: Path, cls: str):
    hf, info = getattr(transformers, cls).from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return hf.eval()


def test_six_layer_student_is_a_distilbert_for_masked_lm_and_classification(tmp_path: Path) -> None:
    teacher = _teacher()
    student = _student(teacher)
    assert student.config.num_layers == 6 and student.config.family == "distilbert"
    torch.testing.assert_close(student.body.layers[3].mlp.fc1.weight, teacher.body.layers[7].mlp.fc1.weight)
    ids, mask = _batch()
    student.export_hf(tmp_path / "mlm")
    hf = _load(tmp_path / "mlm", "DistilBertForMaskedLM")
    assert hf.config.model_type == "distilbert" and hf.config.n_layers == 6
    with torch.no_grad():
        ours, ref = student(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], rtol=1e-4, atol=1e-5)

    student.save_pretrained(tmp_path / "student")
    torch.manual_seed(2)
    cls = Model.from_pretrained(tmp_path / "student", head="seq-cls", num_labels=3).eval()
    cls.export_hf(tmp_path / "cls")
    hf = _load(tmp_path / "cls", "DistilBertForSequenceClassification")
    with torch.no_grad():
        ours, ref = cls(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_a_narrower_student_with_segments_is_a_bert(tmp_path: Path) -> None:
    teacher = _teacher()
    student = _student(teacher, student=None, student_layers=4, student_init="random")
    narrow = Model(student.config.replace(family="bert", type_vocab_size=2, pooler=True, hidden_size=16,
                                          num_heads=4, classifier_activation=None)).eval()
    narrow.export_hf(tmp_path)
    hf = _load(tmp_path, "BertForMaskedLM")
    ids, mask = _batch()
    with torch.no_grad():
        ours, ref = narrow(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], rtol=1e-4, atol=1e-5)
