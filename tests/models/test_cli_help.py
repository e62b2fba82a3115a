"""`lmforge <command> --help` for every command in lmforge/cli.py COMMANDS (and their sub-actions), the
`lmforge` console script and `python -m lmforge`."""
from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

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
    assert scripts.get("lmforge") == "lmforge.cli:entry"  # main, then exit_process (tests/test_cli.py)


# ----------------------------------------------------------------------------- one vocabulary, defaults shown

def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser and the nested ones (`lmforge tokenizer train`)."""
    out = []
    for name in COMMANDS:
        parser = build_parser(name)
        own = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        out.append((f"lmforge {name}", own))
        for a in own._actions:
            if isinstance(a, argparse._SubParsersAction):
                out += [(f"lmforge {name} {n}", p) for n, p in a.choices.items()]
    return out


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as --help prints it (appended default, %(default)s expanded), on one line."""
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    return " ".join(text.split())


def _spellings(value: object) -> set[str]:
    if isinstance(value, (list, tuple)):
        return {" ".join(map(str, value))}
    if isinstance(value, float):
        whole = f"{value:.0f}" if value.is_integer() else ""
        return {str(value), f"{value:g}", f"{value:g}".replace("e-0", "e-"), whole}
    return {str(value)}


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Options that take a value and show in --help (flags like --json are off unless given)."""
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.help != argparse.SUPPRESS]


def test_every_option_says_its_default_or_that_it_is_required():
    missing = []
    for prog, parser in _parsers():
        for action in _options(parser):
            text = _help_of(parser, action)
            if action.required or "required" in text:
                continue
            shown = re.search(r"default:? ([^)]*)", text)
            if shown is None:
                missing.append(f"{prog} {action.option_strings[0]}: {text!r}")
            elif action.default not in (None, argparse.SUPPRESS):
                # the stated default is the real one: its value opens the phrase
                if not any(shown.group(1).startswith(s) for s in _spellings(action.default)):
                    missing.append(f"{prog} {action.option_strings[0]}: default {action.default!r} but help says "
                                   f"{shown.group(0)!r}")
    assert missing == []


def test_help_shows_the_defaults_the_issue_named(capsys):
    for argv, flags in ((["pretrain"], ("--max-steps N optimizer steps to run (default 1000",
                                         "(W < 1) (default 0)", "decay after warmup (default linear)",
                                         "(default none: no checkpoints, only the final model)",
                                         "validation every N steps (default: at the end only)")),
                        (["generate"], ("(default: none, a new draw each run)",)),
                        (["fewshot"], ("seed of the demonstration draw (default 0)",))):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for flag in flags:
            assert flag in out, (argv, flag)


def test_pretrain_help_states_the_defaults_it_really_uses():
    """pretrain's flags default to SUPPRESS (its YAML file may set them): the defaults its help states
    must be the ones resolve_config gives when neither a flag nor the file sets them."""
    from lmforge.recipes.pretrain import resolve_config

    resolved = resolve_config({"model": "m", "data": "d", "out": "o"}).to_dict()
    resolved["warmup"] = resolved["warmup_steps"] or resolved["warmup_ratio"]
    parser = dict(_parsers())["lmforge pretrain"]
    checked = 0
    for action in _options(parser):
        if resolved.get(action.dest) is None or "required" in (action.help or ""):
            continue  # no value (--tokenizer, --save-every ...): the help says what happens in words
        shown = re.search(r"default:? ([-+.\w]+)", _help_of(parser, action))
        assert shown is not None and shown.group(1) in _spellings(resolved[action.dest]), \
            (action.dest, shown and shown.group(0), resolved[action.dest])
        checked += 1
    assert checked >= 15


def test_pretrain_and_finetune_share_the_training_flags():
    """Same names, types, choices and help; the same default where the meaning is the same (seed, batch,
    precision ...); the lr and warmup defaults differ on purpose (pre-training vs fine-tuning)."""
    from lmforge.commands import finetune as ft_cmd, pretrain as pt_cmd
    from lmforge.recipes.finetune import FinetuneConfig

    parsers = dict(_parsers())
    pt = {s: a for a in parsers["lmforge pretrain"]._actions for s in a.option_strings}
    ft = {s: a for a in parsers["lmforge finetune"]._actions for s in a.option_strings}
    shared = ("--max-steps", "--batch-size", "--lr", "--warmup", "--weight-decay", "--precision", "--seed",
              "--save-every", "--resume", "--device", "--no-progress")
    for flag in shared:
        a, b = pt[flag], ft[flag]
        assert (a.dest, a.type, a.choices, a.nargs) == (b.dest, b.type, b.choices, b.nargs), flag
        assert a.help.split(" (default")[0] == b.help.split(" (default")[0], flag
    differ = {k for k in pt_cmd.DEFAULTS if pt_cmd.DEFAULTS[k] != ft_cmd.DEFAULTS[k]}
    assert differ == {"lr", "warmup", "max_steps"}  # max_steps: 1000 vs --epochs decides
    # finetune's flags default to FinetuneConfig's fields (the library and the CLI agree)
    fields = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    for dest, value in ft_cmd.DEFAULTS.items():
        assert fields[dest] == value == ft[f"--{dest.replace('_', '-')}"].default, dest
    from lmforge.commands.common import PRECISIONS
    from lmforge.train.config import _CHOICES, TrainConfig

    assert PRECISIONS == _CHOICES["precision"] and TrainConfig().seed == pt_cmd.DEFAULTS["seed"] == 0


def test_required_flags_show_as_required_in_the_usage_line(capsys):
    for prog, parser in _parsers():
        usage = parser.format_usage()
        for action in parser._actions:
            if action.required and action.option_strings:
                flag = action.option_strings[0]
                assert re.search(rf"(^|[^\[]){re.escape(flag)} ", usage), (prog, flag, usage)
                assert f"[{flag}" not in usage, (prog, flag, usage)
    # pretrain's three may come from its --config file, so argparse cannot require them; its usage says so
    usage = dict(_parsers())["lmforge pretrain"].format_usage()
    assert usage.startswith("usage: lmforge pretrain --model MODEL --data SHARDS --out DIR [options]")
    assert "(--model, --data, --out in the file or as flags)" in usage


# ----------------------------------------------------------------------------- errors: one line

@pytest.mark.parametrize("argv, message", [
    (["finetune"], "lmforge finetune: error: the following arguments are required: --model, --out, --task, --data "
                   "(see lmforge finetune --help)"),
    (["tokenizer", "train", "x.txt"], "lmforge tokenizer train: error: the following arguments are required: "
                                      "--kind, --vocab-size, --out (see lmforge tokenizer train --help)"),
    (["nope"], "lmforge: error: argument COMMAND: invalid choice: 'nope'"),
    (["pretrain", "--lr"], "lmforge pretrain: error: argument --lr: expected one argument (see lmforge pretrain "
                           "--help)"),
    (["generate", "--prompt", "x", "--model", "m", "--top-k", "many"],
     "lmforge generate: error: argument --top-k: invalid int value: 'many' (see lmforge generate --help)"),
])
def test_a_usage_error_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
    assert "usage:" not in err


def test_negative_numbers_in_every_spelling_parse():
    parser = build_parser("pretrain")
    for text, value in (("-1e-4", -1e-4), ("-1E+3", -1e3), ("-.5", -0.5), ("-5.", -5.0), ("-2", -2.0)):
        assert parser.parse_args(["pretrain", "--lr", text]).lr == value
    args = build_parser("generate").parse_args(["generate", "--prompt", "x", "--model", "m", "--top-k", "-3"])
    assert args.top_k == -3


def test_a_negative_lr_gets_the_configs_own_error(capsys):
    # it parses, so the message is the one about the value, not argparse's "expected one argument"
    assert main(["pretrain", "--model", "bert-tiny", "--data", "d", "--out", "o", "--lr", "-1e-4", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("lmforge pretrain: error: learning rates must be positive, got lr=-0.0001, "
                                       "head_lr=None\n")
    assert main(["finetune", "--model", "m", "--task", "glue-cola", "--data", "d", "--out", "o", "--lr",
                 "-2e-5"]) == 2
    assert capsys.readouterr().err == "lmforge finetune: error: impossible fine-tuning setting(s): --lr -2e-05\n"


def test_descriptions_claim_only_what_exists(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out.lower()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text().lower()
    description = re.search(r'^description = "(.*)"$', pyproject, flags=re.M).group(1)
    import lmforge

    for said in (text, description, lmforge.__doc__.lower()):
        for word in ("distil", "compress"):  # each claim names a command that exists
            assert word in said
    assert {"distill", "compress"} <= set(COMMANDS)
    assert "pre-train" in text and "fine-tune" in text
