"""Row-sparse word-table gradients (train/optim.py ``SparseRows``, `lmforge finetune`'s ``sparse-rows``): torch's
AdamW given an ``nn.Embedding(sparse=True)`` gradient must end where it ends on the same gradient made dense, bit
for bit, whichever path a step takes (the rows gathered, or the gradient made dense), across weight decay, AMSGrad,
maximize, the fused and the foreach kernels, gradient accumulation, a state_dict round trip and a tied table that
sometimes gets a dense gradient; and the clipping norm counts the rows as the dense gradient would."""
from __future__ import annotations

import pytest
import torch

from lmforge.train.config import TrainConfig
from lmforge.train.optim import SparseRows, build_optimizer, clip_grad_norm, param_groups

V, H = 400, 16


class Toy(torch.nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.word = torch.nn.Embedding(V, H, sparse=sparse)
        self.out = torch.nn.Linear(H, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.word(ids))).pow(2).mean() * 50


def _batches(steps: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # few rows at first, more every step: rows join the moments while others never get a gradient
    return [torch.randint(0, 10 + 9 * s, (6, 5), generator=g) for s in range(steps)]


def _optimizer(model: torch.nn.Module, *, fused: bool, wd: float, **kw) -> torch.optim.Optimizer:
    groups = param_groups(model.named_parameters(), lr=3e-2, weight_decay=wd)
    if fused and not kw:
        return build_optimizer(groups, TrainConfig(lr=3e-2, weight_decay=wd))  # lmforge's: fused, hooks on
    opt = torch.optim.AdamW(groups, lr=3e-2, weight_decay=wd, fused=fused, foreach=not fused, **kw)
    SparseRows(opt)
    return opt


def _reference(*, wd: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The same model and torch's fused AdamW without SparseRows, fed the row gradient made dense (``densify``)."""
    model = Toy(True)
    return model, torch.optim.AdamW(param_groups(model.named_parameters(), lr=3e-2, weight_decay=wd), lr=3e-2,
                                    weight_decay=wd, fused=True)


def _train(model, opt, batches, *, clip: float | None = None, accumulate: int = 1, sched=None,
           densify: bool = False) -> list[bool]:
    kept_sparse = []
    for ids in batches:
        for part in ids.chunk(accumulate):
            model(part).backward()
        if clip is not None:
            clip_grad_norm(list(model.parameters()), clip)
        if densify:
            model.word.weight.grad = model.word.weight.grad.to_dense()
        opt.step()
        kept_sparse.append(model.word.weight.grad.is_sparse)
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
    return kept_sparse


def _assert_same(a: torch.nn.Module, b: torch.nn.Module, oa, ob) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
        for key, value in oa.state[p].items():
            assert torch.equal(value, ob.state[q][key]), (name, key)


@pytest.mark.parametrize("fraction", [0.5, 0.0, 1.0])  # the default, always dense, always gathered
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sparse_rows_equal_dense_adamw_bit_for_bit(monkeypatch, fraction, fused, wd):
    monkeypatch.setattr(SparseRows, "GATHER_FRACTION", fraction)
    dense, sparse = Toy(False), Toy(True)
    od, os_ = _optimizer(dense, fused=fused, wd=wd), _optimizer(sparse, fused=fused, wd=wd)
    sd = torch.optim.lr_scheduler.LambdaLR(od, lambda s: 1 - s / 40)  # lr changes every step
    ss = torch.optim.lr_scheduler.LambdaLR(os_, lambda s: 1 - s / 40)
    batches = _batches(25)
    _train(dense, od, batches, sched=sd)
    kept = _train(sparse, os_, batches, sched=ss)
    _assert_same(dense, sparse, od, os_)
    # the path the case names was taken: the first step on a table is dense (torch makes the state), then the
    # gathered steps leave the row gradient as it came
    assert kept[0] is False
    assert all(kept[1:]) if fraction == 1.0 else not any(kept[1:]) if fraction == 0.0 else any(kept[1:])
    if wd:  # rows no batch reached still moved (the decay): the update is not restricted to the used rows
        assert not torch.equal(sparse.word.weight[-1], Toy(False).word.weight[-1])


@pytest.mark.parametrize("kw", [{"amsgrad": True}, {"maximize": True}])
def test_sparse_rows_amsgrad_and_maximize(monkeypatch, kw):
    monkeypatch.setattr(SparseRows, "GATHER_FRACTION", 1.0)
    dense, sparse = Toy(False), Toy(True)
    od, os_ = _optimizer(dense, fused=True, wd=0.1, **kw), _optimizer(sparse, fused=True, wd=0.1, **kw)
    batches = _batches(12)
    _train(dense, od, batches)
    assert all(_train(sparse, os_, batches)[1:])
    _assert_same(dense, sparse, od, os_)


def test_sparse_rows_accumulation_and_state_dict_round_trip(monkeypatch):
    """Two backward passes per step (sparse gradients concatenate; the reference gets their sum made dense: a
    dense table would add the two passes' rows in another order); halfway the optimizer is rebuilt from its
    state_dict, as a resumed run is: the rows with moments come back from the moments themselves."""
    monkeypatch.setattr(SparseRows, "GATHER_FRACTION", 1.0)
    (dense, od), sparse = _reference(wd=0.1), Toy(True)
    os_ = _optimizer(sparse, fused=True, wd=0.1)
    batches = _batches(20)
    _train(dense, od, batches, accumulate=2, densify=True)
    _train(sparse, os_, batches[:10], accumulate=2)
    saved = os_.state_dict()
    os_ = _optimizer(sparse, fused=True, wd=0.1)
    os_.load_state_dict(saved)
    assert all(_train(sparse, os_, batches[10:], accumulate=2))
    _assert_same(dense, sparse, od, os_)


def test_sparse_rows_forgets_its_rows_after_a_dense_gradient(monkeypatch):
    """A tied table can get a dense gradient (every row gets moments): the next sparse step must not gather only
    the rows it knew."""
    monkeypatch.setattr(SparseRows, "GATHER_FRACTION", 1.0)
    (dense, od), sparse = _reference(wd=0.1), Toy(True)
    os_ = _optimizer(sparse, fused=True, wd=0.1)
    batches = _batches(12)
    for i, ids in enumerate(batches):
        for model, opt in ((dense, od), (sparse, os_)):
            loss = model(ids)
            if i == 5:  # every row of the table in the loss, as a tied decoder puts it
                loss = loss + model.word.weight.pow(2).sum() * 1e-3
            loss.backward()
            if opt is od and model.word.weight.grad.is_sparse:
                model.word.weight.grad = model.word.weight.grad.to_dense()
            opt.step()
            opt.zero_grad(set_to_none=True)
    _assert_same(dense, sparse, od, os_)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_clip_grad_norm_counts_sparse_rows(scale):
    """The norm and the clipped gradients of row-sparse gradients (duplicate rows summed) equal torch's on the
    dense ones, up to the float rounding of the sum."""
    torch.manual_seed(0)
    models = Toy(False), Toy(True)
    ids = torch.randint(0, 50, (8, 6))
    for m in models:
        (m(ids) * scale).backward()
    ref = torch.nn.utils.clip_grad_norm_(list(models[0].parameters()), 1.0)
    got = clip_grad_norm(list(models[1].parameters()), 1.0)
    assert models[1].word.weight.grad.is_sparse and models[1].word.weight.grad.is_coalesced()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(q.grad.to_dense(), p.grad, rtol=1e-6, atol=1e-12)
    assert (float(ref) > 1.0) == (scale > 1e-3)  # both cases named: clipped and not


def test_the_hooks_keep_no_cycle_to_the_optimizer():
    """An optimizer from build_optimizer is freed when its last reference goes, without a garbage collection: a
    cycle through the hooks kept FSDP's optimizer state alive past the process group's teardown (torchrun's rank
    then aborted at exit, tests/faults/test_recovery.py)."""
    import gc
    import weakref

    model = Toy(True)
    opt = _optimizer(model, fused=True, wd=0.1)
    model(torch.tensor([[1, 2, 3]])).backward()
    opt.step()
    ref = weakref.ref(opt)
    gc.disable()
    try:
        del opt
        assert ref() is None
    finally:
        gc.enable()
