"""A [CLS] classifier's training step computes only position 0 in the last layer (``Model.cls_only_last_layer``,
the ``cls-only`` speed-up of `lmforge finetune`): the loss, the logits and every gradient equal those of the
step that computes every position (HF's), for the seq-cls and choice heads, a pooler (BERT) and a first-token
summary (RoBERTa, ELECTRA), padded and padding-free, with attention dropout on (its mask forced to keep
everything, so both sides draw the same function). What is left alone: evaluation, decoders, hidden states."""
from __future__ import annotations

import pytest
import torch

import lmforge.nn.attention.cpu_fastpath as cpu_fastpath
import lmforge.nn.attention.unpadded as unpadded
from lmforge import Model, ModelConfig

V = 300


def _batch(B: int = 4, T: int = 12, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate([T, 3, 7, 1][:B]):
        if left:
            mask[i, T - n:] = 1
        else:
            mask[i, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def _step(model: Model, head: str, ids, mask, *, cls_only: bool, free: bool):
    model.cls_only_last_layer = cls_only
    model.body.padding_free = free
    model.zero_grad(set_to_none=True)
    if head == "choice":
        ids, mask, labels = ids.view(2, 2, -1), mask.view(2, 2, -1), torch.tensor([1, 0])
    else:
        labels = torch.tensor([0, 1, 2, 1])
    out = model(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _model(preset: str, head: str, *, dropout: float, **extra) -> Model:
    torch.manual_seed(0)
    config = ModelConfig.from_preset(preset, vocab_size=V, head=head, num_layers=2, hidden_size=64, num_heads=2,
                                     intermediate_size=128, num_labels=3, hidden_dropout=0.0,
                                     attention_dropout=dropout, classifier_dropout=0.0, max_positions=64, **extra)
    return Model(config).train()


@pytest.mark.parametrize("preset,head", [("bert-mini", "seq-cls"), ("bert-mini", "choice"),
                                         ("roberta-base", "seq-cls"), ("electra-small", "seq-cls")])
@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_cls_only_equals_every_position(monkeypatch: pytest.MonkeyPatch, preset: str, head: str, free: bool,
                                        dropout: float) -> None:
    keep = lambda like, p: torch.ones_like(like)  # noqa: E731 - dropout that keeps everything, unscaled
    monkeypatch.setattr(cpu_fastpath, "keep_mask", keep)
    monkeypatch.setattr(cpu_fastpath, "keep_scale", lambda p: 1.0)
    model = _model(preset, head, dropout=dropout)
    ids, mask = _batch()
    ref, grads0 = _step(model, head, ids, mask, cls_only=False, free=free)
    out, grads1 = _step(model, head, ids, mask, cls_only=True, free=free)
    assert ref.last_hidden_state.shape[1] == ids.size(1)
    assert out.last_hidden_state.shape[1] == 1  # the last layer computed position 0 alone
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state[:, 0], ref.last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-6, rtol=1e-4, msg=name)


def test_cls_only_with_real_dropout_trains() -> None:
    """With dropout drawn for real the two steps are two samples of the same distribution: finite, and the
    skipped positions really are skipped (the step is the padding-free path's query-row branch)."""
    model = _model("bert-mini", "seq-cls", dropout=0.1)
    ids, mask = _batch()
    out, grads = _step(model, "seq-cls", ids, mask, cls_only=True, free=True)
    assert out.last_hidden_state.shape == (4, 1, 64) and torch.isfinite(out.loss)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_cls_only_leaves_other_calls_alone() -> None:
    """Evaluation, a step without labels, hidden states asked for, left padding under padding-free layers and a
    decoder compute every position (B, T, H), as before."""
    model = _model("bert-mini", "seq-cls", dropout=0.0)
    ids, mask = _batch()
    labels = torch.tensor([0, 1, 2, 1])
    assert model(ids, attention_mask=mask).last_hidden_state.shape[1] == 12  # no labels
    assert model(ids, attention_mask=mask, labels=labels, output_hidden_states=True).last_hidden_state.shape[1] == 12
    model.eval()
    assert model(ids, attention_mask=mask, labels=labels).last_hidden_state.shape[1] == 12
    model.train()
    left_ids, left_mask = _batch(left=True)
    model.body.padding_free = True
    out = model(left_ids, attention_mask=left_mask, labels=labels)  # position 0 is a pad: every row computed
    assert out.last_hidden_state.shape[1] == 12
    model.cls_only_last_layer = False
    ref = model(left_ids, attention_mask=left_mask, labels=labels)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-5)
    gpt = _model("gpt-mini", "seq-cls", dropout=0.0)
    assert gpt(ids, attention_mask=mask, labels=labels).last_hidden_state.shape[1] == 12


@pytest.mark.parametrize("method", ["int8-weight", "int8", "bf16"])
def test_cls_only_query_rows_of_a_compressed_projection(method: str) -> None:
    """An int8 / bf16 q / k / v projection (its own kernel, no float weight to slice) takes the branch that
    projects every row and picks the query rows: the same logits."""
    model = _model("bert-mini", "seq-cls", dropout=0.0).quantize(method).train()
    ids, mask = _batch()
    labels = torch.tensor([0, 1, 2, 1])
    for free in (False, True):
        model.body.padding_free = free
        with torch.no_grad():
            model.cls_only_last_layer = True
            out = model(ids, attention_mask=mask, labels=labels)
            model.cls_only_last_layer = False
            ref = model(ids, attention_mask=mask, labels=labels)
            evaluated = model.eval()(ids, attention_mask=mask, first_token_only=True)
            model.train()
        assert out.last_hidden_state.shape[1] == 1
        torch.testing.assert_close(out.logits.float(), ref.logits.float(), atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(evaluated.logits.float(), ref.logits.float(), atol=1e-3, rtol=1e-3)


def test_first_token_only_in_evaluation() -> None:
    """`finetune`'s evaluation asks for it explicitly (``first_token_only=True``): the same logits in eval mode,
    padded and padding-free; a head that reads other positions is refused with a message."""
    from lmforge.errors import InputError

    model = _model("bert-mini", "seq-cls", dropout=0.1).eval()
    ids, mask = _batch()
    with torch.no_grad():
        for free in (False, True):
            model.body.padding_free = free
            ref = model(ids, attention_mask=mask)
            out = model(ids, attention_mask=mask, first_token_only=True)
            assert out.last_hidden_state.shape[1] == 1
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-5)
    qa = _model("bert-mini", "qa", dropout=0.0).eval()
    with pytest.raises(InputError, match="first_token_only=True needs an encoder"):
        qa(ids, attention_mask=mask, first_token_only=True)


@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("extra", [{}, {"qkv_bias": False}, {"layer_heads": [2, 1]}], ids=["bias", "no-bias", "pruned"])
def test_folded_query_equals_projected_keys(monkeypatch: pytest.MonkeyPatch, free: bool, extra: dict) -> None:
    """The [CLS] layer's attention without key / value projections (cpu_fastpath.one_query_attention: scores from
    Wk^T q against the inputs, the output from Wv times the probability-weighted inputs) gives what projecting
    keys and values for every token gives: the loss, the logits and every gradient (the key bias's ~0 one
    included), with real attention dropout (the same seed draws the same mask on both paths), with and without
    q / k / v biases and with fewer heads in the last layer (head pruning)."""
    calls = []
    real = cpu_fastpath.one_query_attention
    monkeypatch.setattr(cpu_fastpath, "one_query_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(unpadded, "one_query_attention", cpu_fastpath.one_query_attention)
    folds = cpu_fastpath.folds_one_query
    model = _model("bert-mini", "seq-cls", dropout=0.3, **extra)
    ids, mask = _batch()

    def step(fold: bool):
        monkeypatch.setattr(cpu_fastpath, "folds_one_query", lambda *a: fold and folds(*a))
        monkeypatch.setattr(unpadded, "folds_one_query", lambda *a: fold and folds(*a))
        torch.manual_seed(5)
        return _step(model, "seq-cls", ids, mask, cls_only=True, free=free)

    ref, grads0 = step(False)
    assert not calls
    out, grads1 = step(True)
    assert calls == [1]  # the last layer took the folded path
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-6, rtol=1e-4, msg=name)
    bias = "body.layers.1.attn.qkv.bias"
    if bias in grads1:  # q . bk is the same for every key: its gradient is float noise on both paths
        H = grads1[bias].numel() // 3
        assert grads1[bias][H:2 * H].abs().max() < 1e-6

