"""Time-budgeted runs (train/budget.py) with a fake clock: the plan, ending on time, bad input, resume.

The clock only moves when the toy objective computes a loss (``STEP`` seconds per micro-batch), so the tests
are exact and never depend on this machine's speed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lmforge.errors import ConfigError
from lmforge.train import TrainConfig, Trainer, list_source
from lmforge.train.budget import BudgetPlan, BudgetTooShort, Probe, format_duration, parse_duration
from lmforge.train.logging import read_metrics
from lmforge.train.loop import seed_everything

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402

STEP = 2.0  # fake seconds per loss computation


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClockedObjective(toy.ToyObjective):
    """Each loss advances the fake clock by ``per_call(calls)`` seconds."""

    def __init__(self, clock: FakeClock, per_call=lambda n: STEP) -> None:
        super().__init__()
        self.clock, self.per_call = clock, per_call

    def loss(self, model, batch):
        self.clock.now += self.per_call(self.calls)
        return super().loss(model, batch)


def _trainer(out: Path, cfg: TrainConfig, clock: FakeClock, **kw) -> Trainer:
    seed_everything(0)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=cfg.batch_size, seed=cfg.seed)
    return Trainer(toy.ToyLM(), ClockedObjective(clock, **kw), src, cfg, out_dir=out, clock=clock)


def test_parse_duration():
    assert parse_duration("20m") == 1200 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("45") == 45 and parse_duration(30) == 30.0 and parse_duration(" 2M ") == 120
    for bad in ("", "20 min", "-5m", "0", "m", "1d", True):
        with pytest.raises(ConfigError, match="time-budget"):
            parse_duration(bad)
    assert format_duration(12.34) == "12.3s" and format_duration(245) == "4m05s" and format_duration(3720) == "1h02m"


def test_plan_arithmetic():
    clock = FakeClock()
    plan = BudgetPlan(seconds=100.0, clock=clock)
    plan.start()
    clock.now += 5  # the probe
    # 95 s left, 2 s kept for the save + 1 s evaluation: (95 - 3) / 2 = 46 steps
    assert plan.first(0, Probe(step=2.0, save=2.0, evaluate=1.0), checkpoint_at_end=False) == 46
    clock.now += 3 * 4.0  # the steps turn out twice as slow
    assert plan.revise(3) == 3 + int((100 - 17 - 3) / 4.0)
    assert plan.revise(4) is None  # not due
    assert plan.state()["used"] == 17.0


def test_budget_run_ends_on_time_with_a_finished_model(tmp_path):
    clock = FakeClock()
    cfg = TrainConfig(time_budget=120.0, batch_size=8, lr=3e-3, warmup_ratio=0.1, log_every=1, progress=False)
    t0 = clock.now
    result = _trainer(tmp_path, cfg, clock).train()
    used = clock.now - t0
    assert result.stopped == "completed" and result.step == result.total_steps
    # the fake save takes no time: the run uses the budget to within one step, never more
    assert 120.0 - STEP <= used <= 120.0
    assert result.step == int((120.0 - STEP) / STEP)  # the probe's step counts against the budget
    assert (tmp_path / "model.safetensors").is_file() or any(tmp_path.glob("*.safetensors"))
    train = [r for r in read_metrics(tmp_path) if r.get("split") == "train"]
    assert train[-1]["step"] == result.step and train[-1]["time_left_s"] <= STEP
    lrs = [r["lr"] for r in train]
    peak = max(lrs)
    assert peak == pytest.approx(3e-3, rel=0.05) and lrs[-1] < peak * 0.05  # warmup, peak, decayed to the end
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["budget"]["seconds"] == 120.0 and state["budget"]["planned_steps"] == result.step


def test_a_machine_that_slows_down_still_ends_on_time(tmp_path):
    clock = FakeClock()
    cfg = TrainConfig(time_budget=200.0, batch_size=8, lr=3e-3, log_every=5, progress=False)
    # from the 20th loss on every step takes three times as long: the first plan (~99 steps) would overrun by far
    result = _trainer(tmp_path, cfg, clock, per_call=lambda n: STEP if n < 20 else 3 * STEP).train()
    assert clock.now - 1000.0 <= 200.0
    assert 200.0 - 3 * STEP * 2 <= clock.now - 1000.0  # and wastes at most about a step or two
    assert result.step == result.total_steps < 99


def test_budget_shorter_than_a_step_and_a_save_is_refused_before_anything_is_written(tmp_path):
    clock = FakeClock()
    cfg = TrainConfig(time_budget=1.5, batch_size=8, progress=False)
    out = tmp_path / "run"
    with pytest.raises(BudgetTooShort, match=r"shorter than one optimizer step \(2.00s measured\).*at least"):
        _trainer(out, cfg, clock).train()
    assert not out.exists()


def test_budget_with_another_length_is_refused():
    for other in ({"max_steps": 10}, {"max_tokens": 1000}, {"epochs": 1}):
        with pytest.raises(ConfigError, match="time_budget or .*not both") as err:
            TrainConfig(time_budget=60.0, **other)
        flag = {"max_steps": "--max-steps", "max_tokens": "--tokens", "epochs": "--epochs"}[next(iter(other))]
        assert f"give --time-budget or {flag}, not both" in err.value.cli
    with pytest.raises(ConfigError, match="positive"):
        TrainConfig(time_budget=0.0)


def test_resume_of_a_budgeted_run_continues_the_plan_with_the_time_left(tmp_path, capsys):
    clock = FakeClock()
    cfg = TrainConfig(time_budget=100.0, batch_size=8, lr=3e-3, save_every=10, keep=5, log_every=1, progress=False)
    trainer = _trainer(tmp_path, cfg, clock)
    stop_at = 12

    class Stop(Exception):
        pass

    calls = {"n": 0}
    inner = trainer.objective.loss

    def loss(model, batch):  # a "kill" after step 12 (the checkpoint of step 10 is the newest)
        calls["n"] += 1
        if calls["n"] > stop_at + 1:  # + the probe
            raise Stop
        return inner(model, batch)

    trainer.objective.loss = loss
    with pytest.raises(Stop):
        trainer.train()
    from lmforge.train import checkpoint as ckpt

    saved = json.loads((ckpt.latest_checkpoint(tmp_path / "checkpoints") / ckpt.STATE_FILE).read_text())
    assert saved["step"] == 10 and saved["budget"]["used"] == pytest.approx(11 * STEP)
    capsys.readouterr()
    later = FakeClock()
    result = _trainer(tmp_path, cfg, later).train(resume=True)
    said = capsys.readouterr().out
    # 100 s - 22 s used by steps 1-10 (+ the probe) - this run's probe (2 s)
    assert "resume: 1m16s of the 1m40s budget left (22.0s used; the saved plan was 49 steps)" in said
    # the resumed run used only the time that was left: 100 s in all (the killed steps 11-12 are lost time)
    assert saved["budget"]["used"] + (later.now - 1000.0) <= 100.0
    assert result.step == result.total_steps and result.step > 10
    assert result.step == 10 + int((100.0 - 11 * STEP - STEP) / STEP) == 48


def test_resume_of_a_finished_budgeted_run_does_nothing(tmp_path, capsys):
    clock = FakeClock()
    cfg = TrainConfig(time_budget=30.0, batch_size=8, progress=False)
    first = _trainer(tmp_path, cfg, clock).train()
    again = _trainer(tmp_path, cfg, FakeClock()).train(resume=True)
    assert again.stopped == "already_complete" and again.step == first.step
    assert "--time-budget" in capsys.readouterr().out


def test_triangle_is_crammings_budget_triangle2():
    """cramming/backend/optimizers/schedulers.py get_budget_triangle(base_percentage=0.25, falloff=0.25):
    min(0.25 + x * 0.75 / 0.75, 1 / 0.25 - x / 0.25) at x = step / total."""
    from lmforge.train.optim import lr_factor

    f = [lr_factor(s, total=100, warmup=0, schedule="triangle") for s in range(101)]
    assert f[0] == 0.25 and f[50] == pytest.approx(0.75) and f[75] == pytest.approx(1.0)
    assert f[90] == pytest.approx(0.4) and f[100] == 0.0 and max(f) == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:76], f[1:76])) and all(a >= b for a, b in zip(f[75:], f[76:]))


def test_a_resume_with_the_budget_used_up_is_refused_saying_so():
    clock = FakeClock()
    plan = BudgetPlan.from_state(60.0, {"used": 59.5}, clock=clock)
    plan.start()
    with pytest.raises(BudgetTooShort, match=r"only 0.5s of the 1m00s budget is left \(59.5s used before\), less "
                                             r"than one optimizer step \(1.00s measured\)"):
        plan.check_fits(Probe(step=1.0, save=0.5))
