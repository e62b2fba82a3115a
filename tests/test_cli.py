"""The command line's own behaviour: how an interrupted run's continuation command is printed."""
from __future__ import annotations

import sys

from lmforge import cli


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
