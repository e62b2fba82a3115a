"""The fused, chunked vocabulary projection + cross-entropy (``losses.linear_cross_entropy``) gives the
loss and the gradients of plain ``F.cross_entropy(F.linear(h, W, b), y, ignore_index=-100)``: every
chunk layout (one chunk, chunk larger than the batch, an odd remainder reusing part of the buffer),
ignored labels, bias or none, an upstream gradient other than 1, 3-D hidden states, bf16 weights and
autocast (the copy path); and a GPT-2 trained through it has HF transformers' loss and gradients."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn.losses import IGNORE_INDEX, linear_cross_entropy


def _leaves(n: int, h: int, v: int, *, bias: bool, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = (torch.randn(v, generator=g, dtype=dtype) * 0.5).requires_grad_() if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::4] = IGNORE_INDEX  # the first row is ignored too
    return hidden, weight, b, labels


def _loss_and_grads(fn, hidden, weight, bias, labels, upstream: float):
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None
    loss = fn(hidden, weight, bias, labels)
    (loss * upstream).backward()
    return loss.detach(), [t.grad.clone() for t in (hidden, weight, bias) if t is not None]


def _plain(hidden, weight, bias, labels):
    return F.cross_entropy(F.linear(hidden, weight, bias), labels, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("align", [1, 64], ids=["unpadded", "padded-to-64"])  # 64: a GPU's default
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize(("n", "chunk"), [(37, 8), (37, 37), (13, 64), (33, 16)],
                         ids=["remainder-5", "one-chunk", "chunk-over-n", "remainder-1"])
def test_equals_plain_cross_entropy_float64(n: int, chunk: int, bias: bool, align: int) -> None:
    """V = 101: padded to 128 inside with align=64, which must change nothing."""
    hidden, weight, b, labels = _leaves(n, 16, 101, bias=bias, dtype=torch.float64)
    ours, ours_grads = _loss_and_grads(
        lambda h, w, bb, y: linear_cross_entropy(h, w, y, bb, chunk=chunk, align=align),
        hidden, weight, b, labels, upstream=3.0)
    ref, ref_grads = _loss_and_grads(_plain, hidden, weight, b, labels, upstream=3.0)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    for name, got, want in zip(("hidden", "weight", "bias"), ours_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=lambda m, name=name: f"d {name}: {m}")
    assert torch.all(ours_grads[0][labels == IGNORE_INDEX] == 0)  # ignored rows get no gradient
    with torch.no_grad():  # the evaluation path (loss only) agrees as well
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, labels, b, chunk=chunk), ref,
                                   rtol=0, atol=1e-12)


def test_float32_large_vocab_matches_float64_reference() -> None:
    """The benchmark's dtype, several chunks over a vocabulary much wider than the hidden size."""
    hidden, weight, _, labels = _leaves(300, 32, 5003, bias=False, dtype=torch.float32, seed=1)
    ours, (g_h, g_w) = _loss_and_grads(lambda h, w, b, y: linear_cross_entropy(h, w, y, chunk=128),
                                       hidden, weight, None, labels, upstream=1.0)
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    ref, (r_h, r_w) = _loss_and_grads(_plain, h64, w64, None, labels, upstream=1.0)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_h.double(), r_h, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(g_w.double(), r_w, rtol=1e-4, atol=1e-7)


def test_3d_hidden_and_all_ignored() -> None:
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 30, (2, 5), generator=g)
    labels[1, 2] = IGNORE_INDEX
    linear_cross_entropy(hidden, weight, labels, chunk=3).backward()
    g_h, g_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    F.cross_entropy(F.linear(hidden, weight).reshape(-1, 30), labels.reshape(-1)).backward()
    torch.testing.assert_close(g_h, hidden.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_w, weight.grad, rtol=0, atol=1e-12)
    # nothing to predict: a zero loss (a sum over no rows) and zero gradients, not NaN
    hidden.grad = weight.grad = None
    loss = linear_cross_entropy(hidden, weight, torch.full_like(labels, IGNORE_INDEX), chunk=3)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)


def test_bfloat16_weights_and_autocast_take_the_copy_path() -> None:
    """bf16 weights, or fp32 under autocast: products in bf16 copied into the fp32 buffer; the result is
    the plain bf16 computation's up to bf16 rounding."""
    hidden, weight, _, labels = _leaves(40, 16, 211, bias=False, dtype=torch.float32, seed=3)
    ref, (r_h, r_w) = _loss_and_grads(_plain, hidden, weight, None, labels, upstream=1.0)
    hb = hidden.detach().bfloat16().requires_grad_()
    wb = weight.detach().bfloat16().requires_grad_()
    loss, (g_h, g_w) = _loss_and_grads(lambda h, w, b, y: linear_cross_entropy(h, w, y, chunk=16),
                                       hb, wb, None, labels, upstream=1.0)
    assert g_h.dtype == g_w.dtype == torch.bfloat16 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(g_h.float(), r_h, rtol=5e-2, atol=2e-3)
    torch.testing.assert_close(g_w.float(), r_w, rtol=5e-2, atol=2e-3)
    for align in (1, 64):  # a GPU pads the vocabulary (211 -> 256) inside
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, (g_h, g_w) = _loss_and_grads(
                lambda h, w, b, y: linear_cross_entropy(h, w, y, chunk=16, align=align),
                hidden, weight, None, labels, upstream=1.0)
        assert g_h.dtype == g_w.dtype == torch.float32
        torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(g_h, r_h, rtol=5e-2, atol=2e-3)
        torch.testing.assert_close(g_w, r_w, rtol=5e-2, atol=2e-3)
        # the products are bf16 as autocast's unfused path makes them: same result to bf16 rounding
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain, (p_h, p_w) = _loss_and_grads(_plain, hidden, weight, None, labels, upstream=1.0)
        torch.testing.assert_close(loss, plain, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(g_w, p_w, rtol=2e-2, atol=5e-4)


def test_gpt2_training_loss_and_gradients_match_hf(tmp_path: Path) -> None:
    """lmforge's CLM head in its training path (fused loss, tied embedding) against HF GPT2LMHeadModel:
    same loss and the same gradient for every parameter, the tied word embedding included."""
    transformers = pytest.importorskip("transformers")
    from lmforge.models.model import Model

    config = transformers.GPT2Config(vocab_size=211, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=37,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()  # eval: no dropout on either side
    hf.save_pretrained(tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 211, (3, 11), generator=g)
    labels = ids.clone()
    labels[1, 7:] = IGNORE_INDEX
    ref = hf(input_ids=ids, labels=labels).loss
    ref.backward()
    out = ours(input_ids=ids, labels=labels, return_logits=False)  # the training path: no logits made
    assert out.logits is None
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    # lmforge's gradients under HF's names, through the exporter's own name / layout map
    from lmforge.models.hf import get_adapter

    state = {name: (t.grad if isinstance(t, torch.nn.Parameter) else t).detach()
             for name, t in ours.state_dict(keep_vars=True).items()}
    ours_grads = get_adapter(ours.config.family).to_hf(state, ours.config)
    hf_grads = {name: p.grad for name, p in hf.named_parameters()}
    assert set(hf_grads) <= set(ours_grads)
    for name, want in hf_grads.items():  # the tied transformer.wte.weight gets both of its gradients
        torch.testing.assert_close(ours_grads[name], want, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("limit", [2**31, 0], ids=["compiled", "eager-past-the-limit"])
def test_compiled_loss_runs_eagerly_past_the_32_bit_limit(limit: int, monkeypatch) -> None:
    """Under torch.compile the loop is traced into the graph, except where rows x padded vocabulary reaches
    ``COMPILED_LIMIT`` (2^31: an Inductor kernel of the loop crashed past it on a GPU): there it breaks the
    graph and runs eagerly. Either way the loss and gradients are the plain computation's."""
    import lmforge.nn.losses as losses

    monkeypatch.setattr(losses, "COMPILED_LIMIT", limit)
    hidden, weight, _, labels = _leaves(37, 16, 101, bias=False, dtype=torch.float64)
    fn = lambda h, w, b, y: linear_cross_entropy(h, w, y, chunk=8, align=64)  # noqa: E731
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(hidden, weight, None, labels)
    skipped = any("compiler.disable" in r.reason for r in explained.break_reasons)  # the eager call
    assert skipped == (limit == 0), explained.break_reasons
    compiled = torch.compile(fn, backend="eager")
    ours, ours_grads = _loss_and_grads(compiled, hidden, weight, None, labels, upstream=1.0)
    ref, ref_grads = _loss_and_grads(_plain, hidden, weight, None, labels, upstream=1.0)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    for got, want in zip(ours_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
