"""``lmforge.nn.linear``: large float32 CPU products on oneDNN give ``F.linear``'s output and all three gradients
(against float64), take oneDNN exactly where the module says (rows from ``ONEDNN_MIN_ROWS``, plain float32 CPU
tensors, no autocast) and ``F.linear`` everywhere else; the availability probe leaves the seeded RNG stream
alone; a whole padding-free training step gives the same loss and gradients on either kernel."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmforge.nn.attention.cpu_fastpath as cpu_fastpath
import lmforge.nn.linear as lin
from lmforge import Model, ModelConfig

pytestmark = pytest.mark.skipif(not lin.onednn_available(),
                                reason="this torch build has no usable torch.ops.mkldnn._linear_pointwise")


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of the inputs each oneDNN call got."""
    seen: list[tuple[int, ...]] = []
    real = lin._onednn

    def spy(x, weight, bias):
        seen.append(tuple(x.shape))
        return real(x, weight, bias)
    monkeypatch.setattr(lin, "_onednn", spy)
    return seen


@pytest.mark.parametrize("shape", [(2048, 96), (4, 600, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_output_and_gradients_equal_f_linear(calls: list, shape: tuple[int, ...], bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(160, 96, generator=g, requires_grad=True)
    b = torch.randn(160, generator=g, requires_grad=True) if bias else None
    dy = torch.randn(*shape[:-1], 160, generator=g)
    y = lin.linear(x, w, b)
    y.backward(dy)
    assert len(calls) == 2  # the forward and the input gradient
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if bias else None
    ref = F.linear(x64, w64, b64)
    ref.backward(dy.double())
    torch.testing.assert_close(y.double(), ref.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(w.grad.double(), w64.grad, atol=2e-3, rtol=1e-5)  # sums over 2,400 rows
    if bias:
        torch.testing.assert_close(b.grad.double(), b64.grad, atol=1e-3, rtol=1e-5)


def test_only_the_gradients_asked_for(calls: list) -> None:
    x = torch.randn(2048, 32)
    w = torch.randn(48, 32, requires_grad=True)
    lin.linear(x, w).sum().backward()  # frozen input: no input gradient, so one oneDNN call
    assert len(calls) == 1
    torch.testing.assert_close(w.grad, torch.ones(2048, 48).t() @ x, atol=1e-3, rtol=1e-5)
    x.requires_grad_()
    w.requires_grad_(False)
    lin.linear(x, w).sum().backward()
    assert w.grad is not None and len(calls) == 3
    torch.testing.assert_close(x.grad, torch.ones(2048, 48) @ w, atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        lin.linear(x, w)
    assert len(calls) == 4


def test_everything_else_takes_f_linear(calls: list) -> None:
    w = torch.randn(48, 32)
    lin.linear(torch.randn(lin.ONEDNN_MIN_ROWS - 1, 32), w)  # too few rows to repay oneDNN's per-shape JIT
    lin.linear(torch.randn(2048, 32, dtype=torch.float64), w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin.linear(torch.randn(2048, 32), w).dtype == torch.bfloat16  # autocast's cast, as F.linear
    with torch.backends.mkldnn.flags(enabled=False):
        lin.linear(torch.randn(2048, 32), w)
    assert calls == []
    lin.linear(torch.randn(lin.ONEDNN_MIN_ROWS, 32), w)
    assert calls == [(lin.ONEDNN_MIN_ROWS, 32)]


def test_unavailable_falls_back(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    monkeypatch.setattr(lin, "_available", False)
    x, w = torch.randn(2048, 32), torch.randn(48, 32)
    assert torch.equal(lin.linear(x, w), F.linear(x, w)) and calls == []


def test_probe_leaves_the_rng_stream_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lin, "_available", None)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert lin.onednn_available()
    assert torch.equal(torch.get_rng_state(), state)


def test_padding_free_step_same_on_either_kernel(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """A bert-mini-shaped padding-free training step (attention dropout's explicit path, whose q / k / v weight
    is a scaled copy) through oneDNN for every body product, against the same step on F.linear."""
    monkeypatch.setattr(cpu_fastpath, "keep_mask", lambda like, p: torch.ones_like(like))  # dropout keeps all
    monkeypatch.setattr(cpu_fastpath, "keep_scale", lambda p: 1.0)
    torch.manual_seed(0)
    config = ModelConfig.from_preset("bert-mini", vocab_size=300, head="qa", num_layers=2, hidden_size=64,
                                     num_heads=2, intermediate_size=128, max_positions=64, hidden_dropout=0.0,
                                     attention_dropout=0.1, classifier_dropout=0.0)
    model = Model(config).train()
    model.body.padding_free = True
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (4, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    mask[3, 9:] = 0
    answers = {"start_positions": torch.tensor([1, 2, 3, 4]), "end_positions": torch.tensor([5, 6, 7, 8])}

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, **answers)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    monkeypatch.setattr(lin, "ONEDNN_MIN_ROWS", 10 ** 9)
    loss0, grads0 = step()
    assert calls == []
    monkeypatch.setattr(lin, "ONEDNN_MIN_ROWS", 1)
    loss1, grads1 = step()
    assert len(calls) == 2 * 2 * 4  # 2 layers x (qkv, out, fc1, fc2) x (forward, input gradient)
    torch.testing.assert_close(loss1, loss0, atol=1e-6, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-5, rtol=1e-4, msg=name)
