"""Wall-clock budgets: ``--time-budget 20m`` plans the run's length from its own measured step time.

How a budgeted run goes (``Trainer`` with ``TrainConfig.time_budget`` seconds):

1. Before anything is written, a probe times one optimizer step's forward / backward passes (no update), one
   save of the model and, when there is one, one evaluation. A budget shorter than a step plus the final save is
   refused then (``BudgetTooShort``), with the measured times.
2. The first plan: ``steps = (time left - reserve) / step time``, the reserve being the final save and the final
   evaluation. Warmup (a ratio of the planned steps) and the decay to the end follow the plan.
3. Every ``replan_every`` steps the plan is revised from the step time measured since the last revision
   (evaluations and checkpoints included), so a machine that gets slower or faster still ends on time; a
   revision only moves the end of the schedule (the lr is a function of step / planned steps).
4. The time used is checkpointed with the plan; ``--resume`` continues the same plan with the time that is left.

Cramming (Geiping & Goldstein 2022) plans by elapsed time too (cramming/backend/optimizers/schedulers.py, the
``budget-*`` schedules, progress = elapsed / budget); here the schedule stays a function of the step, so a resumed
run follows the saved plan and a fake clock makes the whole thing testable.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError

Clock = Callable[[], float]
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)


class BudgetTooShort(ConfigError):
    """The wall-clock budget cannot hold one optimizer step plus saving the model."""


def parse_duration(value: Any, *, flag: str = "--time-budget") -> float:
    """Seconds from ``90s`` / ``20m`` / ``1.5h`` / a bare number of seconds (an int or float is seconds)."""
    if isinstance(value, bool):
        raise ConfigError(f"{flag} must be a duration such as 20m, 90s or 1.5h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{flag} must be a duration such as 20m, 90s or 1.5h (s, m or h; a bare number is "
                              f"seconds), got {value!r}")
        seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{flag} must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h02m``, ``4m05s``, ``12.3s``: short enough for a progress bar."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class Probe:
    """What the probe measured before the run (seconds)."""

    step: float  # one optimizer step's forward / backward passes (all micro-batches)
    save: float  # writing the model once
    evaluate: float = 0.0  # one evaluation (0 when the run has none)


@dataclass
class BudgetPlan:
    """The plan of a budgeted run; ``state()`` goes into every checkpoint, ``from_state`` reads it back."""

    seconds: float  # the whole budget
    used_before: float = 0.0  # time used by the run before this process started (a resume)
    clock: Clock = field(default=time.monotonic, repr=False)
    replan_every: int = 10  # revise the plan every N optimizer steps
    step_time: float | None = None  # the latest measured seconds per optimizer step
    reserve: float = 0.0  # kept for the end: the final save (+ evaluation, + checkpoint)
    total: int = 0  # the planned optimizer steps
    _t0: float = field(default=0.0, repr=False)
    _mark: tuple[int, float] | None = field(default=None, repr=False)  # (step, clock) of the last revision

    def start(self) -> None:
        self._t0 = self.clock()

    def used(self) -> float:
        """Seconds of the budget used so far (this process's and, on a resume, the saved run's)."""
        return self.used_before + (self.clock() - self._t0)

    def left(self) -> float:
        return self.seconds - self.used()

    def check_fits(self, probe: Probe) -> None:
        """Refuse, before anything starts, a budget that cannot hold one step plus the final save."""
        need = probe.step + probe.save
        left = self.left()
        if left < need:
            where = (f"only {format_duration(left)} of the {format_duration(self.seconds)} budget is left "
                     f"({format_duration(self.used_before)} used before), less than" if self.used_before
                     else f"the --time-budget of {format_duration(self.seconds)} is shorter than")
            raise BudgetTooShort(
                f"{where} one optimizer step ({probe.step:.2f}s measured) plus saving the model ({probe.save:.2f}s); "
                f"give a --time-budget of at least {format_duration(math.ceil(need * 1.5 + self.used_before))} "
                "(a few hundred steps for a useful model), or a smaller model / batch")

    def first(self, step: int, probe: Probe, *, checkpoint_at_end: bool) -> int:
        """The plan from the probe's step time (``step`` > 0 on a resume)."""
        self.reserve = probe.save + probe.evaluate + (3 * probe.save if checkpoint_at_end else 0.0)
        self.step_time = max(probe.step, 1e-9)
        self._mark = (step, self.clock())
        self.total = max(step + 1, self._steps_for(step))  # check_fits made room for one step at least
        return self.total

    def revise(self, step: int) -> int | None:
        """The revised plan at ``step`` (every ``replan_every`` steps, and early on), or None when not due."""
        assert self._mark is not None, "first() comes before revise()"
        since, t = self._mark
        due = step - since >= self.replan_every or (since == 0 and step == 3)  # early: the probe misses the update
        if not due or step <= since:
            if self.left() - self.reserve < (self.step_time or 0.0):  # out of time between revisions: stop here
                self.total = step
                return step
            return None
        now = self.clock()
        self.step_time = max((now - t) / (step - since), 1e-9)
        self._mark = (step, now)
        self.total = self._steps_for(step)
        return self.total

    def _steps_for(self, step: int) -> int:
        assert self.step_time is not None
        room = self.left() - self.reserve
        return step + max(0, math.floor(room / self.step_time))

    def state(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "used": round(self.used(), 3), "planned_steps": self.total,
                "step_time": self.step_time, "reserve": round(self.reserve, 3)}

    @classmethod
    def from_state(cls, seconds: float, saved: dict[str, Any] | None, *, clock: Clock) -> BudgetPlan:
        used = float(saved.get("used", 0.0)) if saved else 0.0
        return cls(seconds=seconds, used_before=used, clock=clock)


__all__ = ["BudgetPlan", "BudgetTooShort", "Probe", "format_duration", "parse_duration"]
