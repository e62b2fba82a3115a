"""The command line's own behaviour: how an interrupted run's continuation command is printed; how the program
ends (a torchrun worker skips interpreter shutdown, its output flushed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import cli

REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str, world: str | None) -> subprocess.CompletedProcess:
    """``python -c code`` with block-buffered output (no PYTHONUNBUFFERED) and WORLD_SIZE=world (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "PYTHONUNBUFFERED")}
    if world:
        env["WORLD_SIZE"] = world
    return subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)


def test_command_line_is_the_one_the_user_typed(monkeypatch):
    argv = ["pretrain", "--config", "my run.yaml", "--resume"]
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/lmforge", *argv])
    assert cli.command_line(argv) == "lmforge pretrain --config 'my run.yaml' --resume"
    monkeypatch.setattr(sys, "argv", ["/src/lmforge/__main__.py", *argv])
    assert cli.command_line(argv) == "python -m lmforge pretrain --config 'my run.yaml' --resume"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.command_line(argv).startswith("torchrun --nproc_per_node 2 -m lmforge pretrain")
    monkeypatch.setenv("WORLD_SIZE", "8")  # several nodes: their options cannot be rebuilt from here
    assert cli.command_line(argv).startswith("torchrun [your torchrun options] -m lmforge pretrain")


def test_ctrl_c_outside_training_says_no_checkpoint_was_written(monkeypatch, capsys):
    from lmforge.commands import presets

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(presets, "run", interrupted)
    assert cli.main(["presets"]) == 130
    assert capsys.readouterr().err == "lmforge presets: interrupted\n"
    from lmforge.commands import pretrain

    monkeypatch.setattr(pretrain, "run", interrupted)
    assert cli.main(["pretrain"]) == 130
    assert capsys.readouterr().err == "lmforge pretrain: interrupted; no checkpoint was written\n"


EXIT_SCRIPT = """
import atexit, sys
from lmforge.cli import exit_process
atexit.register(lambda: print("atexit ran", file=sys.stderr))
print("buffered", end="")  # a pipe: block-buffered, not yet written when exit_process is called
print("to stderr", file=sys.stderr, end="")
exit_process(3)
"""


@pytest.mark.parametrize("world", [None, "1", "2"])
def test_exit_process_flushes_and_a_torchrun_worker_skips_interpreter_shutdown(world):
    res = _run_python(EXIT_SCRIPT, world)
    assert res.returncode == 3 and res.stdout == "buffered"
    assert res.stderr.startswith("to stderr")
    # os._exit under torchrun: no atexit handler, hence no interpreter shutdown for gloo's threads to race
    assert ("atexit ran" in res.stderr) == (world != "2")


PROGRAM = """
import atexit, runpy, sys
atexit.register(lambda: print("atexit ran", file=sys.stderr))
sys.argv = ["lmforge", "presets"]
runpy.run_module("lmforge", run_name="__main__")  # python -m lmforge presets
"""


@pytest.mark.parametrize("world", [None, "2"])
def test_python_m_lmforge_exits_through_exit_process(world):
    """(the console script's entry point, `entry` too, is pinned in tests/models/test_cli_help.py)"""
    res = _run_python(PROGRAM, world)
    assert res.returncode == 0 and "bert-base" in res.stdout, res.stderr
    assert ("atexit ran" in res.stderr) == (world is None)
