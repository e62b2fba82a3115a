"""Training against HF transformers: an HF BERT checkpoint and lmforge's model loaded from it, trained side by side
on the same batches with the same optimizer (dropout 0), follow the same loss curve and end at the same weights;
lmforge's fine-tuning speed-ups (padding-free layers, the [CLS]-only last layer) on. The forward parity tests
(test_hf_encoders.py) compare one forward; this compares what training does with the gradients, step after step.
(benchmarks/finetuning.py's accuracy comparison rests on it: docs/finetuning.md, "Against HF Trainer".)"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder_cases import B, HF_PREFIX, L, VOCAB, hf_config, make_labels, pad_id

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

STEPS = 12


def _batch(step: int, family: str) -> dict[str, torch.Tensor]:
    """A batch of B sequences of random real lengths (2..L), right-padded, two segments (RoBERTa: one)."""
    g = torch.Generator().manual_seed(100 + step)
    lengths = torch.randint(2, L + 1, (B,), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    ids = torch.randint(5, VOCAB, (B, L), generator=g).masked_fill(mask == 0, pad_id(family))
    types = (torch.arange(L)[None] >= (lengths[:, None] // 2)).long() * mask * (family != "roberta")
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# qa on the padded path reads pad positions (their logits are in the start / end softmax): HF's [PAD] word row (and
# RoBERTa's pad position row) get no gradient (padding_idx); lmforge's did until this test found it on 2026-12-05
# (nn/embeddings.py pad_row, LearnedPositions)
@pytest.mark.parametrize(("family", "head", "padding_free"), [
    ("bert", "seq-cls", True), ("bert", "seq-cls", False), ("bert", "qa", False), ("bert", "token-cls", True),
    ("roberta", "qa", False)])
def test_training_follows_hf(family: str, head: str, padding_free: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = hf_config(transformers, family, head, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cls = HF_PREFIX[family] + {"seq-cls": "ForSequenceClassification", "qa": "ForQuestionAnswering",
                               "token-cls": "ForTokenClassification"}[head]
    hf = getattr(transformers, cls)(cfg)
    hf.save_pretrained(tmp_path)
    ours = Model.from_pretrained(tmp_path)
    ours.body.padding_free = padding_free  # as `lmforge finetune` sets it (the library default is off)
    assert ours.cls_only_last_layer  # on: a seq-cls training step computes the last layer for [CLS] alone
    hf.train()
    ours.train()
    # SGD with momentum: its updates are linear in the gradient, so float rounding stays small over the steps
    # (Adam's first steps are ~sign(g) and would turn a 1e-9 difference in a near-zero gradient into lr)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (hf, ours)]
    curves: list[list[float]] = [[], []]
    for step in range(STEPS):
        batch = _batch(step % 3, family)  # three batches in turn: enough to fit, so the loss falls
        labels = make_labels(head, batch, seed=step % 3)
        for i, (model, opt) in enumerate(zip((hf, ours), opts)):
            loss = model(**batch, **labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            curves[i].append(float(loss))
    assert curves[1] == pytest.approx(curves[0], rel=1e-4, abs=1e-5)
    assert min(curves[0][-3:]) < 0.8 * curves[0][0]  # it did train (the comparison is not of a model standing still)
    theirs = dict(hf.named_parameters())
    ours.export_hf(tmp_path / "ours")  # lmforge's trained weights under HF's names
    exported = getattr(transformers, cls).from_pretrained(tmp_path / "ours")
    assert set(dict(exported.named_parameters())) == set(theirs)
    for name, p in exported.named_parameters():
        assert torch.allclose(p, theirs[name], rtol=1e-3, atol=1e-4), name
