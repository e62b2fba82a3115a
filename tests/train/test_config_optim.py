"""TrainConfig checks, parameter groups (no decay on biases / norms, head lr, LLRD), schedules, LAMB."""
from __future__ import annotations


import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.train.config import TrainConfig, load_yaml, merge
from lmforge.train.optim import Lamb, build_optimizer, build_scheduler, clip_grad_norm, lr_factor, param_groups


def test_unknown_and_impossible_fields_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown training option 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="Did you mean: max_steps"):
        TrainConfig.from_dict({"max_step": 10})
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(warmup_steps=10, warmup_ratio=0.1)
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        TrainConfig(batch_size=8, global_batch_size=20).accumulation_steps(1)
    (tmp_path / "c.yaml").write_text("lr: 3.0e-4\nmax-steps: 7\n")
    cfg = TrainConfig.from_dict(merge(load_yaml(tmp_path / "c.yaml"), {"lr": 1e-3, "seed": None}))
    assert (cfg.lr, cfg.max_steps, cfg.seed) == (1e-3, 7, 0)


def test_global_batch_in_sequences_or_tokens():
    assert TrainConfig(batch_size=8, global_batch_size=64).accumulation_steps(2) == 4
    cfg = TrainConfig(batch_size=8, seq_len=128, global_batch_tokens=128 * 32)
    assert cfg.accumulation_steps(1) == 4 and cfg.global_sequences() == 32
    assert TrainConfig(max_tokens=10_000, batch_size=4, seq_len=100).total_steps() == 25
    assert TrainConfig(epochs=1.5).total_steps(steps_per_epoch=10) == 15


def test_param_groups_decay_head_lr_and_layer_decay():
    model = torch.nn.Module()
    model.body = torch.nn.Module()
    model.body.embeddings = torch.nn.Embedding(10, 4)
    model.body.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
    model.body.norm = torch.nn.LayerNorm(4)
    model.head = torch.nn.Linear(4, 2)
    groups = param_groups(model.named_parameters(), lr=1.0, weight_decay=0.1, head_lr=5.0, layer_lr_decay=0.5)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}
    assert by_name["body.embeddings.weight"] == (0.5 ** 4, 0.1)
    assert by_name["body.layers.0.weight"] == (0.5 ** 3, 0.1)
    assert by_name["body.layers.0.bias"] == (0.5 ** 3, 0.0)
    assert by_name["body.layers.2.weight"] == (0.5, 0.1)
    assert by_name["body.norm.weight"] == (1.0, 0.0) and by_name["body.norm.bias"] == (1.0, 0.0)
    assert by_name["head.weight"] == (5.0, 0.1) and by_name["head.bias"] == (5.0, 0.0)
    opt = build_optimizer(groups, TrainConfig(lr=1.0))
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted({g["lr"] for g in opt.param_groups}) == sorted({g["lr"] for g in groups})


def test_schedules_match_hf():
    transformers = pytest.importorskip("transformers")
    total, warm = 50, 10
    for schedule, hf in (("linear", transformers.get_linear_schedule_with_warmup),
                         ("cosine", transformers.get_cosine_schedule_with_warmup)):
        p = torch.nn.Parameter(torch.zeros(2))
        ours = build_scheduler(torch.optim.SGD([p], lr=1.0), TrainConfig(schedule=schedule, warmup_ratio=0.2), total)
        theirs = hf(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0), warm, total)
        for _ in range(total):
            assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12)
            ours.optimizer.step(); ours.step(); theirs.optimizer.step(); theirs.step()
    assert lr_factor(100, total=100, warmup=0, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(5, total=100, warmup=0, schedule="constant") == 1.0


def test_lamb_trust_ratio_and_convergence():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 8))
    opt = Lamb([w], lr=0.1)
    w.grad = torch.randn(8, 8)
    before = w.detach().clone()
    opt.step()
    # first Adam step: update = sign-like m/sqrt(v) = grad/|grad| (+eps); LAMB scales it to ||w|| * lr
    step = float((before - w.detach()).norm())
    assert step == pytest.approx(0.1 * float(before.norm()), rel=1e-4)
    # and it minimises a quadratic
    x = torch.nn.Parameter(torch.full((4,), 3.0))
    opt = Lamb([x], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        ((x - 1.0) ** 2).sum().backward()
        opt.step()
    assert torch.allclose(x.detach(), torch.ones(4), atol=0.1)


@pytest.mark.parametrize("scale", [1e-3, 0.01, 0.02, 0.3, 30.0])
def test_clip_grad_norm_is_torchs_bit_for_bit(scale):
    """lmforge's clip skips torch's multiply by exactly 1.0 on CPU; norm and gradients must not change a bit."""
    torch.manual_seed(0)
    shapes = [(300, 16), (16,), (7, 5), (1,)]
    grads = [torch.randn(s) * scale for s in shapes]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, q, g in zip(ours, ref, grads):
        p.grad, q.grad = g.clone(), g.clone()
    ours.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient: skipped by both
    ref.append(torch.nn.Parameter(torch.zeros(3)))
    norm = clip_grad_norm(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert torch.equal(norm, want)
    for p, q in zip(ours, ref):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)
    clipped = float(want) > 1.0
    assert clipped == any(not torch.equal(p.grad, g) for p, g in zip(ours, grads))  # the case is the one named
