"""The CPU training fast path and the selected-rows path compute the same function as the plain (SDPA) ones.

* CPU training attention (``nn/attention/cpu_fastpath.py``): with the dropout mask forced to keep everything
  it equals the eval-mode (SDPA) model, bidirectional with padding and causal.
* ``output_rows`` (last layer at the masked rows only): loss, logits and every gradient equal a full
  forward of the same model, for the MLM and the MLM + NSP heads.
"""
from __future__ import annotations

import pytest
import torch

import lmforge.nn.attention.cpu_fastpath as cpu_fastpath
from lmforge import Model, ModelConfig
from lmforge.errors import InputError


def _keep_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    # the attention dropout multiplies by keep_mask * keep_scale: ones and 1 keep everything, unscaled
    monkeypatch.setattr(cpu_fastpath, "keep_mask", lambda like, p: torch.ones_like(like))
    monkeypatch.setattr(cpu_fastpath, "keep_scale", lambda p: 1.0)


@pytest.mark.parametrize("preset,head", [("bert-mini", "mlm"), ("gpt-mini", "clm")])
def test_cpu_fastpath_attention_equals_sdpa(monkeypatch: pytest.MonkeyPatch, preset: str, head: str) -> None:
    _keep_everything(monkeypatch)
    torch.manual_seed(0)
    config = ModelConfig.from_preset(preset, vocab_size=500, head=head, hidden_dropout=0.0, attention_dropout=0.2,
                                     num_layers=2)
    model = Model(config)
    ids = torch.randint(5, 500, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # padding: the dense-mask branch
    for attention_mask in (None, mask):
        model.train()
        got = model(ids, attention_mask=attention_mask, return_logits=True).logits
        model.eval()
        want = model(ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["mlm", "pretraining"])
def test_output_rows_equal_full_forward_and_gradients(monkeypatch: pytest.MonkeyPatch, head: str) -> None:
    _keep_everything(monkeypatch)
    torch.manual_seed(0)
    config = ModelConfig.from_preset("bert-mini", vocab_size=500, head=head, hidden_dropout=0.0,
                                     attention_dropout=0.1, num_layers=2)
    model = Model(config)
    ids = torch.randint(5, 500, (4, 32))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[2, 10:15] = 7
    labels[3, 31] = 9  # the last position
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 28:] = 0
    extra = {"next_sentence_label": torch.tensor([0, 1, 0, 1])} if head == "pretraining" else {}

    def run(train: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.train(train)
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=attention_mask, labels=labels, **extra)
        out.loss.backward()
        return out.loss.detach(), out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                        if p.grad is not None}

    loss, logits, grads = run(True)  # output_rows: the last layer at the 9 labelled rows only
    ref_loss, ref_logits, ref_grads = run(False)  # full forward (eval mode: no row selection)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], atol=2e-5, rtol=1e-4, msg=name)


def test_output_rows_body_shape_and_bad_use() -> None:
    torch.manual_seed(0)
    body = Model(ModelConfig.from_preset("bert-mini", vocab_size=100, head="mlm", num_layers=2)).body.eval()
    ids = torch.randint(5, 100, (2, 10))
    rows = torch.zeros_like(ids, dtype=torch.bool)
    rows[0, [2, 5]] = True
    rows[1, 9] = True
    out = body(ids, output_rows=rows)
    torch.testing.assert_close(out.last_hidden_state, body(ids).last_hidden_state[rows], atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="output_rows"):
        body(ids, output_rows=rows, output_hidden_states=True)


@pytest.mark.parametrize("kind", ["keys", "causal", "rows", "none"])
@pytest.mark.parametrize("chunk_bytes", [cpu_fastpath.CHUNK_BYTES, 1, 3 * 10 * 12 * 4])
def test_explicit_attention_equals_masked_softmax(monkeypatch: pytest.MonkeyPatch, kind: str,
                                                  chunk_bytes: int) -> None:
    # the additive-bias / chunked core against the plain masked_fill + softmax, outputs and gradients; chunk
    # sizes: one chunk, one row per chunk, 3 rows (B * nh = 8: uneven chunks are made equal, 3 + 3 + 2)
    _keep_everything(monkeypatch)
    monkeypatch.setattr(cpu_fastpath, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    B, nh, M, T, hs, p = 4, 2, 10, 12, 8, 0.1
    q, k, v = (torch.randn(B * nh, n, hs, dtype=torch.float64, requires_grad=True) for n in (M, T, T))
    keys = torch.ones(B, T, dtype=torch.bool)
    keys[1, 7:] = False
    keys[3, 2:] = False
    mask = {"keys": keys[:, None, None, :], "causal": torch.ones(M, T, dtype=torch.bool).tril(T - M),
            "rows": keys[:, None, None, :] & torch.ones(M, T, dtype=torch.bool).tril(T - M), "none": None}[kind]
    g = torch.randn(B * nh, M, hs, dtype=torch.float64)

    def reference() -> torch.Tensor:
        scores = (q @ k.transpose(1, 2)).view(B, nh, M, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return (scores.softmax(-1) * (1 - p) / (1 - p)).view(B * nh, M, T) @ v

    results = []
    for fn in (reference, lambda: cpu_fastpath.explicit_attention(q, k, v, batch=B, dense_mask=mask, p=p)):
        y = fn()
        y.backward(g)
        results.append((y.detach(), *(t.grad.clone() for t in (q, k, v))))
        q.grad = k.grad = v.grad = None
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["keys", "causal", "none", "unpadded"])
@pytest.mark.parametrize("chunk_bytes", [cpu_fastpath.CHUNK_BYTES, cpu_fastpath.PACKED_CHUNK_BYTES, 1, 3 * 12 * 12 * 8])
@pytest.mark.parametrize("qscale", [1.0, 0.35])
def test_packed_attention_equals_explicit_attention(monkeypatch: pytest.MonkeyPatch, kind: str,
                                                    chunk_bytes: int, qscale: float) -> None:
    # the packed core (one-pass layouts, its own backward) against autograd through explicit_attention, with
    # real dropout (p = 0.3): the same seed draws the same masks, so outputs and all gradients must agree;
    # "unpadded": the rows of the real tokens only, scattered into (B, T) with the padded positions zeroed;
    # qscale: the score factor inside the core against q scaled before it
    monkeypatch.setattr(cpu_fastpath, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(cpu_fastpath, "PACKED_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    B, nh, T, hs, p = 4, 2, 12, 8, 0.3
    H = nh * hs
    keys = torch.ones(B, T, dtype=torch.bool)
    keys[1, 7:] = False
    keys[3, 2:] = False
    mask = {"keys": keys[:, None, None, :], "causal": torch.ones(T, T, dtype=torch.bool).tril(),
            "none": None, "unpadded": keys[:, None, None, :]}[kind]
    index = keys.reshape(-1).nonzero().squeeze(1) if kind == "unpadded" else torch.arange(B * T)
    pad = (~keys).reshape(-1).nonzero().squeeze(1)
    qkv = torch.randn(index.numel(), 3 * H, dtype=torch.float64, requires_grad=True)
    g = torch.randn(index.numel(), H, dtype=torch.float64)

    def explicit() -> torch.Tensor:
        full = qkv.new_zeros(B * T, 3 * H).index_copy(0, index, qkv)
        q, k, v = full.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).reshape(3, B * nh, T, hs).unbind(0)
        y = cpu_fastpath.explicit_attention(q * qscale, k, v, batch=B, dense_mask=mask, p=p)
        return y.view(B, nh, T, hs).transpose(1, 2).reshape(B * T, H).index_select(0, index)

    def packed() -> torch.Tensor:
        rows = (index // T, index % T) if kind == "unpadded" else None
        pads = (pad // T, pad % T) if kind == "unpadded" else None
        return cpu_fastpath.packed_attention(qkv, rows=rows, pads=pads, dense_mask=mask, batch=B, length=T,
                                             heads=nh, p=p, qscale=qscale)

    results = []
    for fn in (explicit, packed):
        torch.manual_seed(1)
        y = fn()
        y.backward(g)
        results.append((y.detach(), qkv.grad.clone()))
        qkv.grad = None
    torch.testing.assert_close(results[1], results[0])
    assert results[0][0].abs().sum() > 0 and (results[0][0] == 0).sum() < results[0][0].numel() // 4


def test_packed_attention_ignores_what_padded_rows_hold() -> None:
    # the padded positions of the head-major layout are zeroed: garbage (NaN) left in recycled memory must
    # not reach a real row's output or gradient
    torch.manual_seed(0)
    B, nh, T, hs = 2, 2, 6, 4
    keys = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    index = keys.reshape(-1).nonzero().squeeze(1)
    pad = (~keys).reshape(-1).nonzero().squeeze(1)
    real_empty = torch.Tensor.new_empty

    def nan_empty(self, *a, **k):  # every buffer starts as NaN
        return real_empty(self, *a, **k).fill_(float("nan"))

    qkv = torch.randn(index.numel(), 3 * nh * hs, requires_grad=True)
    try:
        torch.Tensor.new_empty = nan_empty
        y = cpu_fastpath.packed_attention(qkv, rows=(index // T, index % T), pads=(pad // T, pad % T),
                                          dense_mask=keys[:, None, None, :], batch=B, length=T, heads=nh, p=0.1)
        y.sum().backward()
    finally:
        torch.Tensor.new_empty = real_empty
    assert torch.isfinite(y).all() and torch.isfinite(qkv.grad).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [cpu_fastpath.VARLEN_BLOCK, 300])
def test_varlen_attention_equals_per_sequence_softmax(monkeypatch: pytest.MonkeyPatch, causal: bool,
                                                      block: int) -> None:
    # one sequence at a time, with real dropout (p = 0.3): the masks the core draws are recorded and the reference
    # applies them sequence by sequence, as the docstring lays them out ((nh, n, n) per sequence, in order, one
    # draw per group of sequences: block 300 splits the batch into groups); outputs and the gradient of the
    # fused q / k / v rows in float64
    monkeypatch.setattr(cpu_fastpath, "VARLEN_BLOCK", block)
    drawn = []
    real_keep = cpu_fastpath.keep_mask

    def recording(like: torch.Tensor, p: float) -> torch.Tensor:
        drawn.append(real_keep(like, p))
        return drawn[-1].clone()

    monkeypatch.setattr(cpu_fastpath, "keep_mask", recording)
    torch.manual_seed(0)
    nh, hs, p = 2, 8, 0.3
    H = nh * hs
    lengths = [12, 3, 0, 7, 1]
    qkv = torch.randn(sum(lengths), 3 * H, dtype=torch.float64, requires_grad=True)
    g = torch.randn(sum(lengths), H, dtype=torch.float64)
    y = cpu_fastpath.varlen_attention(qkv, lengths=lengths, heads=nh, causal=causal, p=p)
    y.backward(g)
    got = (y.detach(), qkv.grad.clone())
    qkv.grad = None
    assert len(drawn) == (1 if block > 1000 else 2)  # maps of 288 | 18 + 98 + 2 elements
    keep = torch.cat(drawn)
    scale = cpu_fastpath.keep_scale(p)
    outs, row, at = [], 0, 0
    for n in lengths:
        q, k, v = qkv[row:row + n].view(n, 3, nh, hs).permute(1, 2, 0, 3)  # (nh, n, hs) each
        scores = q @ k.transpose(1, 2)
        if causal:
            scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        kept = keep[at:at + nh * n * n].view(nh, n, n)
        outs.append(((scores.softmax(-1) * kept * scale) @ v).transpose(0, 1).reshape(n, H))
        row, at = row + n, at + nh * n * n
    assert at == keep.numel() and 0.2 < 1 - keep.mean().item() < 0.4
    want = torch.cat(outs)
    want.backward(g)
    torch.testing.assert_close(got, (want.detach(), qkv.grad))


def test_varlen_attention_of_no_tokens() -> None:
    qkv = torch.zeros(0, 3 * 16, requires_grad=True)
    y = cpu_fastpath.varlen_attention(qkv, lengths=[0, 0], heads=2, causal=False, p=0.1)
    assert y.shape == (0, 16)
    y.sum().backward()
    assert qkv.grad.shape == (0, 48)
