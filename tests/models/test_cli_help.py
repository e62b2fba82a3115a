"""`lmforge <command> --help` for every command in lmforge/cli.py COMMANDS (and their sub-actions), the
`lmforge` console script and `python -m lmforge`."""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from lmforge.cli import COMMANDS, build_parser, main


def _sub_actions(command: str) -> list[str]:
    """Nested actions of a command (e.g. `lmforge tokenizer train`)."""
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    own = sub.choices[command]
    return [name for a in own._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_on_every_command(command, capsys):
    for argv in ([command, "--help"], *([command, action, "--help"] for action in _sub_actions(command))):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0, argv
        out = capsys.readouterr().out
        assert out.startswith(f"usage: lmforge {' '.join(argv[:-1])}"), (argv, out[:200])
        if len(argv) == 2:  # the one-line description is shown (argparse may wrap it)
            assert " ".join(COMMANDS[command][1].split()) in " ".join(out.split())


def test_top_level_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_python_m_lmforge_and_console_script():
    out = subprocess.run([sys.executable, "-m", "lmforge", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "presets" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "lmforge", "presets", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--json" in out.stdout, out.stderr
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("lmforge") == "lmforge.cli:main"
