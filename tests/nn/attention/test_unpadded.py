"""Padding-free layers (``Transformer.padding_free``, nn/attention/unpadded.py) compute the padded path's
function: for every head, on a batch of mixed lengths, the same loss, the same logits at every real
position and the same gradient for every parameter; in training with attention dropout too (the
CPU explicit-softmax branch, its mask forced to keep everything). The QA loss of the padding-free
path leaves padded positions out of the softmax; it is compared with the padded logits' loss computed
the same way."""
from __future__ import annotations

import pytest
import torch

import lmforge.nn.attention.cpu_fastpath as cpu_fastpath
import lmforge.nn.attention.unpadded as unpadded
import lmforge.nn.quantized as quantized
from lmforge import Model, ModelConfig

V = 300


def _batch(B: int = 4, T: int = 12, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = [T, 3, 7, 1][:B]
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, T - n:] = 1
        else:
            mask[i, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def _inputs(head: str, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    B, T = ids.shape
    g = torch.Generator().manual_seed(2)
    labels_tok = torch.randint(0, 3, (B, T), generator=g).masked_fill(mask == 0, -100)
    if head == "seq-cls":
        return {"labels": torch.tensor([0, 1, 2, 1])[:B]}
    if head == "token-cls":
        return {"labels": labels_tok}
    if head == "qa":
        return {"start_positions": torch.tensor([0, 1, 2, 0])[:B], "end_positions": torch.tensor([3, 2, 5, 0])[:B]}
    if head in ("mlm", "pretraining"):
        out = {"labels": torch.randint(5, V, (B, T), generator=g).masked_fill((labels_tok != 1), -100)}
        if head == "pretraining":
            out["next_sentence_label"] = torch.tensor([0, 1, 1, 0])[:B]
        return out
    if head == "rtd":
        return {"labels": labels_tok.clamp(max=1).masked_fill(mask == 0, -100)}
    if head == "clm":
        return {"labels": ids.masked_fill(mask == 0, -100)}
    if head == "extract":
        return {"labels": torch.tensor([0, 1, 2, 1])[:B]}
    if head == "choice":
        return {}
    raise AssertionError(head)


def _run(model: Model, head: str, ids, mask, inputs, *, free: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.body.padding_free = free
    model.zero_grad(set_to_none=True)
    kwargs = dict(inputs)
    if head in ("choice",):
        kwargs = {"labels": torch.tensor([1, 0])}
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    out = model(ids, attention_mask=mask, **kwargs)
    loss = out.loss
    if head == "qa" and not free:
        # the padding-free QA loss leaves padded positions out of the softmax (no answer candidates):
        # the padded path's logits with the same positions left out
        from lmforge.nn.losses import span_loss

        pad = mask.eq(0)
        low = torch.finfo(out.start_logits.dtype).min
        loss = span_loss(out.start_logits.masked_fill(pad, low), out.end_logits.masked_fill(pad, low),
                         inputs["start_positions"], inputs["end_positions"])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), out.logits.detach(), grads


CASES = [("bert-mini", "seq-cls"), ("bert-mini", "token-cls"), ("bert-mini", "qa"), ("bert-mini", "choice"),
         ("bert-mini", "mlm"), ("bert-mini", "pretraining"), ("bert-mini", "rtd"), ("roberta-base", "seq-cls"),
         ("gpt-mini", "clm"), ("gpt-mini", "extract")]


@pytest.mark.parametrize("preset,head", CASES)
@pytest.mark.parametrize("training", [False, "packed", "varlen"])
def test_padding_free_equals_padded(monkeypatch: pytest.MonkeyPatch, preset: str, head: str,
                                    training: bool | str) -> None:
    # training: with attention dropout on CPU, the batched core (packed_attention) for short batches, or one
    # sequence at a time (varlen_attention) from cpu_fastpath.varlen_from's length on (here forced for T = 12)
    keep = lambda like, p: torch.ones_like(like)  # noqa: E731 - dropout that keeps everything, unscaled
    monkeypatch.setattr(cpu_fastpath, "keep_mask", keep)
    monkeypatch.setattr(cpu_fastpath, "keep_scale", lambda p: 1.0)
    monkeypatch.setattr(unpadded, "varlen_from", lambda threads: 0 if training == "varlen" else 10 ** 9)
    torch.manual_seed(0)
    config = ModelConfig.from_preset(preset, vocab_size=V, head=head, num_layers=2, hidden_size=64, num_heads=2,
                                     intermediate_size=128, num_labels=3, hidden_dropout=0.0,
                                     attention_dropout=0.1 if training else 0.0, classifier_dropout=0.0,
                                     max_positions=64)
    model = Model(config).train(bool(training))
    ids, mask = _batch(left=config.causal and head == "clm" and False)
    inputs = _inputs(head, ids, mask)
    loss0, logits0, grads0 = _run(model, head, ids, mask, inputs, free=False)
    loss1, logits1, grads1 = _run(model, head, ids, mask, inputs, free=True)
    torch.testing.assert_close(loss1, loss0, atol=1e-5, rtol=1e-5)
    if logits0.shape[:2] == mask.shape and head != "extract":  # per-token logits: the real positions
        logits0, logits1 = logits0[mask.bool()], logits1[mask.bool()]
    torch.testing.assert_close(logits1, logits0, atol=1e-5, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_padding_free_skips_what_it_cannot_do() -> None:
    """No padding, a KV cache or hidden states asked for: the padded path runs (same outputs, (B, T, H))."""
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset("gpt-mini", vocab_size=V, num_layers=1, hidden_size=64, num_heads=2,
                                          intermediate_size=128)).eval()
    ids, mask = _batch()
    model.body.padding_free = True
    out = model.body(ids, attention_mask=mask, output_hidden_states=True)
    model.body.padding_free = False
    ref = model.body(ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state)  # pads included: same path
    model.body.padding_free = True
    free = model.body(ids, attention_mask=mask).last_hidden_state
    assert free.shape == ref.last_hidden_state.shape
    assert bool((free[~mask.bool()] == 0).all())  # padded positions are zeros
    torch.testing.assert_close(free[mask.bool()], ref.last_hidden_state[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compressed", ["prune-heads", "int8:int-mm", "int8:fbgemm", "int8-weight", "bf16"])
def test_padding_free_runs_compressed_models(compressed: str) -> None:
    """`lmforge evaluate` runs padding-free: a head-pruned model (attention narrower than the model) and
    int8 / bf16 projections (their own kernels, not F.linear of a float weight) give the padded path's logits.
    fbgemm quantizes activations with one scale per call, which the pad rows take part in on the padded path:
    close, not equal (int-mm's per-token scales are equal)."""
    from lmforge.compression.prune import prune

    torch.manual_seed(0)
    config = ModelConfig.from_preset("bert-mini", vocab_size=V, head="seq-cls", num_layers=2, hidden_size=64,
                                     num_heads=4, intermediate_size=128, num_labels=3, max_positions=64)
    model = Model(config).eval()
    if compressed == "prune-heads":
        model = prune(model, heads=[[0, 2], [1, 2, 3]]).eval()
        assert model.config.layer_heads == [2, 3]
    else:
        method, _, kernel = compressed.partition(":")
        if kernel and quantized.get_kernel(method, None) and quantized.available_kernels(method)[kernel]:
            pytest.skip(f"kernel {kernel}: {quantized.available_kernels(method)[kernel]}")
        model = model.quantize(method, kernel=kernel or None)
    ids, mask = _batch()
    with torch.no_grad():
        model.body.padding_free = False
        ref = model(ids, attention_mask=mask).logits
        model.body.padding_free = True
        out = model(ids, attention_mask=mask).logits
    tol = 2e-2 if compressed in ("bf16", "int8:fbgemm") else 1e-4
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("preset", ["bert-mini", "gpt-mini"])
@pytest.mark.parametrize("path", ["per-sequence", "batched"])
@pytest.mark.parametrize("left", [False, True])
def test_padding_free_inference(monkeypatch: pytest.MonkeyPatch, preset: str, path: str, left: bool) -> None:
    """Without autograd on CPU the padding-free layers attend one sequence at a time (cpu_fastpath.varlen_sdpa,
    no mask), or for short batches the whole batch in batched products (cpu_fastpath.packed_sdpa, the padding
    as a bias): the padded path's hidden states at every real position, bidirectional and causal, right- and
    left-padded; each path is shown to be the one taken."""
    calls = []
    monkeypatch.setattr(unpadded, "packed_sdpa_upto", lambda threads: 10 ** 6 if path == "batched" else 0)
    for name in ("varlen_sdpa", "packed_sdpa"):
        real = getattr(unpadded, name)
        monkeypatch.setattr(unpadded, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset(preset, vocab_size=V, num_layers=2, hidden_size=64, num_heads=2,
                                          intermediate_size=128, max_positions=64)).eval()
    ids, mask = _batch(left=left)
    with torch.no_grad():
        ref = model.body(ids, attention_mask=mask).last_hidden_state
        model.body.padding_free = True
        out = model.body(ids, attention_mask=mask).last_hidden_state
    assert calls == ["packed_sdpa" if path == "batched" else "varlen_sdpa"] * 2
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_short_batches_attend_batched(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """By default a batch of at most ``packed_sdpa_upto(threads)`` positions takes the batched inference path and
    a longer one the per-sequence path (the crossover measured in cpu_fastpath.py)."""
    calls = []
    for name in ("varlen_sdpa", "packed_sdpa"):
        real = getattr(unpadded, name)
        monkeypatch.setattr(unpadded, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    torch.manual_seed(0)
    model = Model(ModelConfig.from_preset("bert-mini", vocab_size=V, num_layers=1, hidden_size=64, num_heads=2,
                                          intermediate_size=128, max_positions=64)).eval()
    model.body.padding_free = True
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        upto = cpu_fastpath.packed_sdpa_upto(threads)
        with torch.no_grad():
            for T in (upto, upto + 1):
                model.body(*_batch(T=T))
    finally:
        torch.set_num_threads(before)
    assert calls == ["packed_sdpa", "varlen_sdpa"]
    assert cpu_fastpath.packed_sdpa_upto(1) < cpu_fastpath.packed_sdpa_upto(2)  # more threads: batched for longer
