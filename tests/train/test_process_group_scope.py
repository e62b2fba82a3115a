"""``process_group_scope`` / ``tears_down_process_group`` (lmforge.train.distributed): the group the code inside
joined is destroyed on return, on an LmforgeError and on KeyboardInterrupt; nested scopes keep one group
(gloo cannot join twice under torchrun); a group the caller made is left alone; only a clean exit waits
at a barrier. One gloo process here; tests/recipes/test_torchrun_teardown.py runs the commands under torchrun."""
from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist

from lmforge.errors import ConfigError
from lmforge.train import distributed as D


def _join() -> None:
    """What init_distributed does under torchrun, with one process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)


@pytest.fixture
def barriers(monkeypatch) -> list[int]:
    """Pretend 2 processes so shutdown's barrier runs; record its calls."""
    seen: list[int] = []
    monkeypatch.setattr(D.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(D.dist, "barrier", lambda *a, **k: seen.append(1))
    yield seen
    if dist.is_initialized():  # a failed test must not leave a group to the next one
        dist.destroy_process_group()


def test_a_clean_return_waits_for_every_process_then_destroys(barriers):
    @D.tears_down_process_group
    def recipe(x: int) -> int:
        """doc"""
        _join()
        return x + 1

    assert recipe(1) == 2 and recipe.__doc__ == "doc" and recipe.__name__ == "recipe"
    assert not dist.is_initialized() and barriers == [1]


@pytest.mark.parametrize("error", [ConfigError("bad flag"), KeyboardInterrupt()])
def test_an_error_or_an_interrupt_destroys_without_waiting(barriers, error):
    @D.tears_down_process_group
    def recipe() -> None:
        _join()
        raise error

    with pytest.raises(type(error)):
        recipe()
    assert not dist.is_initialized() and barriers == []  # another process may never reach a barrier


def test_nested_recipes_keep_one_group_until_the_outermost_returns(barriers):
    @D.tears_down_process_group
    def inner() -> None:
        if not dist.is_initialized():
            _join()

    @D.tears_down_process_group
    def outer() -> bool:
        _join()
        inner()
        alive = dist.is_initialized()  # e.g. finetune_seeds between two seeds' finetune runs
        inner()
        return alive

    assert outer() is True
    assert not dist.is_initialized() and barriers == [1]


def test_a_group_the_caller_made_is_left_alone(barriers):
    _join()
    try:
        with D.process_group_scope():
            pass
        assert dist.is_initialized() and barriers == []
    finally:
        dist.destroy_process_group()


def test_a_barrier_that_fails_still_destroys(monkeypatch, capsys):
    """A peer that stopped on its own error breaks the barrier: say so in one line, still leave the group."""
    def broken(*a, **k):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(D.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(D.dist, "barrier", broken)
    with D.process_group_scope():
        _join()
    assert not dist.is_initialized()
    assert "another process stopped first (RuntimeError)" in capsys.readouterr().err


def test_quickstart_and_lab_refuse_to_run_under_torchrun(monkeypatch, capsys):
    """Each rank would run every stage into the same folder: one message, exit 2, nothing started."""
    from lmforge import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv in (["quickstart", "--fast", "--out", "never-made"], ["lab", "fill-mask", "--fast"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "without torchrun" in err and "Traceback" not in err
    import os
    assert not os.path.exists("never-made")
