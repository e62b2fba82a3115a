"""Distillation losses against float64 reimplementations written here from the papers' / repos' formulas, the
pre-softmax attention scores, the layer maps, the student initialisation and the teacher-as-student check."""
from __future__ import annotations

import math

import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError
from lmforge.nn import losses
from lmforge.objectives.distill import (DistillLoss, Distillation, check_pair, distilbert_layer_map,
                                        init_from_teacher, tinybert_layer_maps, tinybert_terms)

G = torch.Generator().manual_seed(0)
SMALL = dict(vocab_size=50, hidden_size=16, num_heads=2, intermediate_size=32, max_positions=32,
             hidden_dropout=0.0, attention_dropout=0.0)


def _softmax64(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def test_kl_with_t_squared_on_the_masked_rows() -> None:
    """Hinton et al. / distiller.py: T^2 * sum_v p_t log(p_t / p_s), averaged over the masked positions."""
    B, L, V, T = 2, 5, 7, 2.0
    s, t = torch.randn(B, L, V, generator=G) * 3, torch.randn(B, L, V, generator=G) * 3
    labels = torch.full((B, L), -100)
    labels[0, 1], labels[0, 3], labels[1, 4] = 3, 1, 6
    keep = labels != -100
    got = losses.distillation_kl_loss(s[keep], t[keep], temperature=T)
    rows = [(b, i) for b in range(B) for i in range(L) if labels[b, i] != -100]
    total = 0.0
    for b, i in rows:
        ps = _softmax64([float(x) / T for x in s[b, i]])
        pt = _softmax64([float(x) / T for x in t[b, i]])
        total += sum(q * (math.log(q) - math.log(p)) for q, p in zip(pt, ps))
    want = T * T * total / len(rows)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_cosine_embedding_loss_with_target_one() -> None:
    s, t = torch.randn(9, 6, generator=G), torch.randn(9, 6, generator=G)
    got = losses.cosine_embedding_loss(s, t)
    want = 0.0
    for a, b in zip(s.double().tolist(), t.double().tolist()):
        dot = sum(x * y for x, y in zip(a, b))
        want += 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    assert got.item() == pytest.approx(want / len(s), rel=1e-5)
    # distiller.py's own loss function gives the same number
    ref = torch.nn.CosineEmbeddingLoss()(s, t, torch.ones(len(s)))
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_tinybert_attention_mse_zeroes_the_padding_keys() -> None:
    B, nh, L = 2, 3, 4
    s, t = torch.randn(B, nh, L, L, generator=G), torch.randn(B, nh, L, L, generator=G)
    real = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = losses.attention_score_loss(s, t, real)
    total = 0.0
    for b in range(B):
        for h in range(nh):
            for i in range(L):
                for j in range(L):
                    d = 0.0 if real[b, j] == 0 else float(s[b, h, i, j]) - float(t[b, h, i, j])
                    total += d * d
    assert got.item() == pytest.approx(total / (B * nh * L * L), rel=1e-5)


def test_hidden_mse_after_the_projection_and_soft_cross_entropy() -> None:
    proj = torch.nn.Linear(3, 5)
    hs, ht = torch.randn(2, 4, 3, generator=G), torch.randn(2, 4, 5, generator=G)
    got = losses.hidden_state_loss(hs, ht, proj)
    W, b = proj.weight.double().tolist(), proj.bias.double().tolist()
    total, n = 0.0, 0
    for x_row, y_row in zip(hs.reshape(-1, 3).double().tolist(), ht.reshape(-1, 5).double().tolist()):
        for k in range(5):
            y = sum(W[k][c] * x_row[c] for c in range(3)) + b[k]
            total, n = total + (y - y_row[k]) ** 2, n + 1
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    # task_distill.py soft_cross_entropy: (-softmax(t) * log_softmax(s)).mean() over every element
    s, t = torch.randn(4, 3, generator=G), torch.randn(4, 3, generator=G)
    want = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = _softmax64(srow), _softmax64(trow)
        want += sum(-q * math.log(p) for q, p in zip(pt, ps))
    assert losses.soft_cross_entropy(s, t).item() == pytest.approx(want / 12, rel=1e-5)


def test_scores_are_the_pre_softmax_maps_and_the_default_path_is_unchanged() -> None:
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset("bert-tiny", num_layers=2, **SMALL)).eval()
    ids = torch.randint(5, 50, (2, 6), generator=G)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        plain = model(ids, attention_mask=mask)
        probs = model(ids, attention_mask=mask, output_attentions=True)
        scores = model(ids, attention_mask=mask, output_attentions="scores", output_hidden_states=True)
        # layer 0 by hand: q k^T / sqrt(hs) from the fused projection of the embeddings' output
        x = scores.hidden_states[0]
        q, k, _ = model.body.layers[0].attn.qkv(x).split(16, dim=-1)
        q, k = (z.view(2, 6, 2, 8).transpose(1, 2) for z in (q, k))
        by_hand = q @ k.transpose(-1, -2) / math.sqrt(8)
    torch.testing.assert_close(scores.attentions[0], by_hand, rtol=1e-5, atol=1e-5)
    for p, s in zip(probs.attentions, scores.attentions):
        masked = s.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        torch.testing.assert_close(masked.softmax(-1), p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.last_hidden_state, scores.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert plain.attentions is None


def test_layer_maps() -> None:
    assert distilbert_layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # scripts/extract_distilbert.py
    assert distilbert_layer_map(12, 4) == [0, 4, 7, 11] and distilbert_layer_map(4, 4) == [0, 1, 2, 3]
    assert distilbert_layer_map(6, 1) == [0]
    # TinyBERT-4 from BERT-base: k = 3 (general_distill.py)
    assert tinybert_layer_maps(12, 4) == ([2, 5, 8, 11], [0, 3, 6, 9, 12])
    with pytest.raises(ConfigError, match="multiple of the student's: 12 teacher layers, 5"):
        tinybert_layer_maps(12, 5)
    with pytest.raises(ConfigError, match="1 to 4 layers"):
        distilbert_layer_map(4, 6)


def _bert(layers: int, **kw) -> Model:
    return Model(ModelConfig.from_preset("bert-tiny", head="mlm", num_layers=layers, **{**SMALL, **kw}))


def test_student_init_copies_exactly_the_mapped_tensors() -> None:
    torch.manual_seed(0)
    teacher = _bert(4)
    student = Model(teacher.config.replace(num_layers=2, family="distilbert", type_vocab_size=0, pooler=False,
                                           classifier_activation="relu"))
    pairs = dict(init_from_teacher(student, teacher, [0, 3]))
    t, s = teacher.state_dict(), student.state_dict()
    for name, tensor in s.items():
        if name.startswith("body.layers."):
            i = int(name.split(".")[2])
            source = name.replace(f"body.layers.{i}.", f"body.layers.{[0, 3][i]}.", 1)
        else:
            source = name
        assert pairs[name] == source
        assert torch.equal(tensor, t[source]), name
    assert "body.embeddings.segment.weight" not in s and "body.pooler.dense.weight" not in s
    assert len(pairs) == len(s)  # every student tensor came from the teacher
    with pytest.raises(ConfigError, match="points past the teacher's depth: 4"):
        init_from_teacher(student, teacher, [0, 4])
    with pytest.raises(ConfigError, match="teacher's width"):
        init_from_teacher(_bert(2, hidden_size=8), teacher, [0, 1])


def test_pair_checks_name_both_sizes() -> None:
    teacher = _bert(2)
    with pytest.raises(ConfigError, match="teacher has a vocabulary of 50 ids and the student 60"):
        check_pair(teacher.config, teacher.config.replace(vocab_size=60), recipe="distilbert")
    with pytest.raises(ConfigError, match="needs the teacher's 2 heads \\(it has 4\\)"):
        check_pair(teacher.config, teacher.config.replace(num_heads=4), recipe="tinybert")
    gpt = ModelConfig.from_preset("gpt-tiny", head="clm", **SMALL)
    with pytest.raises(ConfigError, match="use --recipe logits"):
        check_pair(gpt, gpt, recipe="distilbert")
    with pytest.raises(ConfigError, match="unknown distillation recipe 'tinybret'"):
        DistillLoss(recipe="tinybret")


class _Base:  # the mlm objective's part the Distillation object reads
    head, seq_len = "mlm", 8


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 50, (3, 8), generator=G)
    labels = torch.full_like(ids, -100)
    labels[:, 2], labels[:, 5] = ids[:, 2], ids[:, 5]
    ids = ids.masked_fill(labels != -100, 4)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def test_the_teacher_as_its_own_student_has_zero_kl_and_cosine() -> None:
    torch.manual_seed(0)
    teacher = _bert(2)
    student = _bert(2)
    student.load_state_dict(teacher.state_dict())
    for positions in ("masked", "all"):
        objective = Distillation(_Base(), teacher, DistillLoss(ce_positions=positions), student_config=student.config)
        loss, metrics = objective.loss(student.eval(), _batch())
        assert abs(metrics["kl_loss"].item()) < 1e-6 and abs(metrics["cos_loss"].item()) < 1e-6
        assert metrics["teacher_agreement"].item() == 1.0
        assert loss.item() == pytest.approx(2.0 * metrics["mlm_loss"].item(), abs=1e-5)
    # and a different student does not (the terms are not trivially zero)
    other = _bert(2)
    _, metrics = Distillation(_Base(), teacher, DistillLoss(), student_config=other.config).loss(other, _batch())
    assert metrics["kl_loss"].item() > 1e-4 and metrics["cos_loss"].item() > 1e-3


def test_tinybert_terms_pick_the_mapped_layers() -> None:
    torch.manual_seed(0)
    teacher, student = _bert(4), _bert(2, hidden_size=8, intermediate_size=16)
    objective = Distillation(_Base(), teacher, DistillLoss(recipe="tinybert"), student_config=student.config)
    assert (objective.att_map, objective.hidden_map) == ([1, 3], [0, 2, 4])
    batch = _batch()
    loss, metrics = objective.loss(student, batch)
    kw = dict(attention_mask=batch["attention_mask"], output_hidden_states=True, output_attentions="scores")
    s, t = student(batch["input_ids"], **kw), teacher(batch["input_ids"], **kw)
    want_att = sum(losses.attention_score_loss(s.attentions[i], t.attentions[j], batch["attention_mask"])
                   for i, j in ((0, 1), (1, 3)))
    want_hid = sum(losses.hidden_state_loss(s.hidden_states[i], t.hidden_states[j], objective.projection)
                   for i, j in ((0, 0), (1, 2), (2, 4)))
    assert metrics["att_loss"].item() == pytest.approx(want_att.item(), rel=1e-5)
    assert metrics["hidden_loss"].item() == pytest.approx(want_hid.item(), rel=1e-5)
    assert loss.item() == pytest.approx(want_att.item() + want_hid.item(), rel=1e-5)
    loss.backward()  # the projection learns with the student; the teacher stays frozen
    assert objective.projection.weight.grad is not None and all(p.grad is None for p in teacher.parameters())
    assert set(objective.extra_modules()) == {"projection"}
    att, hid = tinybert_terms(s, s, att_map=[0, 1], hidden_map=[0, 1, 2], projection=None, key_padding=None)
    assert att.item() == 0 and hid.item() == 0


def test_topk_kl_with_every_id_is_the_full_kl_and_renormalises_a_few() -> None:
    s, t = torch.randn(6, 11, generator=G) * 2, torch.randn(6, 11, generator=G) * 2
    full = losses.distillation_kl_loss(s, t, temperature=2.0)
    values, indices = t.topk(11, dim=-1)
    torch.testing.assert_close(losses.topk_distillation_kl_loss(s, values, indices, temperature=2.0), full)
    values, indices = t.topk(3, dim=-1)
    want = 0.0
    for row in range(6):  # the teacher's 3 best ids renormalised; the student's full softmax at those ids
        q = _softmax64([float(v) / 2.0 for v in values[row]])
        ps = _softmax64([float(x) / 2.0 for x in s[row]])
        want += sum(qj * (math.log(qj) - math.log(ps[int(i)])) for qj, i in zip(q, indices[row]))
    got = losses.topk_distillation_kl_loss(s, values, indices, temperature=2.0)
    assert got.item() == pytest.approx(4.0 * want / 6, rel=1e-5)
