"""The thread choice for CPU training: requested / OMP_NUM_THREADS win; a busy machine leaves busy cores alone."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lmforge.train import threads


def test_requested_and_env_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.choose_threads(3, cores=2).threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads(cores=2).threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a number: ignored, measured instead
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda s: 0.1)
    assert threads.choose_threads(cores=2).threads == 2


@pytest.mark.parametrize("busy, cores, expected", [(0.2, 2, 2), (0.9, 2, 1), (1.6, 2, 1), (3.0, 2, 1), (1.2, 8, 7),
                                                   (None, 4, 4)])
def test_free_cores(monkeypatch: pytest.MonkeyPatch, busy, cores, expected) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda s: busy)
    assert threads.choose_threads(cores=cores).threads == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_measures_another_busy_process() -> None:
    quiet = threads.busy_cores_elsewhere(0.3)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        busy = threads.busy_cores_elsewhere(0.5)
    finally:
        burner.kill()
        burner.wait()
    assert quiet is not None and busy is not None
    # the burner alone keeps one core busy; the rest of the machine may add, never subtract
    assert busy >= 0.7, (quiet, busy)
