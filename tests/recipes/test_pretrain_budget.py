"""`lmforge pretrain --time-budget` through the CLI: the flag, its bad input (exit 2, one message), a short real
run on the toy shards and its resume. The plan itself is tested with a fake clock in tests/train/test_budget.py."""
from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from lmforge.errors import ConfigError
from lmforge.recipes.pretrain import resolve_config

BASE = ["pretrain", "--model", "bert-tiny", "--data", "d", "--out", "o"]


def test_time_budget_flag_resolves_and_excludes_other_lengths(tmp_path, capsys):
    assert main([*BASE, "--time-budget", "20m", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "time_budget: 1200.0" in said and "max_steps: null" in said
    for flags, other in ((["--max-steps", "10"], "--max-steps"), (["--tokens", "2e6"], "--tokens")):
        assert main([*BASE, "--time-budget", "20m", *flags, "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f"give --time-budget or {other}, not both" in err and "keep one" in err
    assert main([*BASE, "--time-budget", "20 minutes", "--dry-run"]) == 2
    assert "--time-budget must be a duration such as 20m, 90s or 1.5h" in capsys.readouterr().err
    # a YAML file's length gives way to a typed budget, and a typed length to the file's budget
    run = tmp_path / "run.yaml"
    run.write_text("model: bert-tiny\ndata: d\nout: o\nmax_steps: 50\n")
    assert resolve_config({"time_budget": "90s"}, run).train.time_budget == 90.0
    run.write_text("model: bert-tiny\ndata: d\nout: o\ntime_budget: 1h\n")
    assert resolve_config({}, run).train.time_budget == 3600.0
    typed = resolve_config({"max_steps": 7}, run).train
    assert typed.max_steps == 7 and typed.time_budget is None
    with pytest.raises(ConfigError, match="time_budget or max_steps, not both"):
        resolve_config({"time_budget": "1m", "max_steps": 7})


def test_budgeted_run_ends_with_a_model_and_a_budget_too_short_is_refused(toy_shards, tmp_path, capsys):
    args = ["pretrain", "--model", str(toy_shards["bert"]), "--objective", "mlm", "--data",
            str(toy_shards["wordpiece"]), "--batch-size", "4", "--seq-len", "32", "--log-every", "1",
            "--val-batches", "1", "--no-progress", "--warmup", "0.1"]
    short = tmp_path / "short"
    # a millisecond cannot hold a step and a save (whatever the machine): refused before anything is written
    assert main([*args, "--out", str(short), "--time-budget", "0.001s"]) == 2
    err = capsys.readouterr().err
    assert "is shorter than one optimizer step" in err and "give a --time-budget of at least" in err
    assert not short.exists()
    out = tmp_path / "run"
    assert main([*args, "--out", str(out), "--time-budget", "3s"]) == 0
    said = capsys.readouterr().out
    assert "time budget 3.0s:" in said and "planned" in said and "done:" in said
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == state["total_steps"] == state["budget"]["planned_steps"] >= 1
    assert state["budget"]["seconds"] == 3.0
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("time_left_s" in r for r in train if r["split"] == "train")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    # resumed when finished: nothing to do, and it says how to go on
    assert main([*args, "--out", str(out), "--time-budget", "3s", "--resume"]) == 0
    assert "ended within its --time-budget" in capsys.readouterr().out
