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


# ----------------------------------------------------------------------------- --recipe budget / budget-hf

def test_recipe_defaults_sit_under_the_yaml_file_and_the_flags(tmp_path):
    from lmforge.recipes.budget import RECIPES

    c = resolve_config({"model": "bert-tiny", "data": "d", "out": "o", "recipe": "budget"})
    t = c.train
    # Cramming bert-o4.yaml / optim/adam.yaml (recipes/budget.py cites them)
    assert (t.lr, t.schedule, t.adam_beta2, t.adam_eps, t.max_grad_norm, t.warmup_steps, t.warmup_ratio) == \
        (1e-3, "triangle", 0.98, 1e-12, 0.5, 0, 0.0)
    assert c.mask_prob == 0.25 and c.recipe == "budget"
    run = tmp_path / "run.yaml"
    run.write_text("model: bert-tiny\ndata: d\nout: o\nrecipe: budget-hf\nschedule: linear\nmask_prob: 0.15\n")
    c = resolve_config({"lr": 5e-4, "warmup": 0.1}, run)
    assert (c.train.lr, c.train.schedule, c.mask_prob, c.train.warmup_ratio) == (5e-4, "linear", 0.15, 0.1)
    assert c.train.adam_beta2 == 0.98  # what neither gave comes from the recipe
    assert set(RECIPES) == {"budget", "budget-hf"}
    with pytest.raises(ConfigError, match="unknown --recipe 'budgte'.*Did you mean: budget"):
        resolve_config({"model": "bert-tiny", "data": "d", "out": "o", "recipe": "budgte"})


def test_recipe_models_budget_is_pre_ln_without_biases_budget_hf_exports(toy_shards, tmp_path, capsys):
    import torch

    from lmforge import Model
    from lmforge.recipes.export import export_hf_dir

    runs = {}
    for recipe in ("budget", "budget-hf"):
        out = tmp_path / recipe
        assert main(["pretrain", "--model", str(toy_shards["bert"]), "--recipe", recipe, "--data",
                     str(toy_shards["wordpiece"]), "--out", str(out), "--batch-size", "4", "--seq-len", "32",
                     "--max-steps", "4", "--val-batches", "1", "--no-progress"]) == 0
        runs[recipe] = Model.from_pretrained(out)
    capsys.readouterr()
    pre, post = runs["budget"].config, runs["budget-hf"].config
    assert (pre.norm_placement, pre.qkv_bias, pre.attention_out_bias, pre.hidden_dropout, pre.attention_dropout) == \
        ("pre", False, False, 0.0, 0.0)
    assert pre.classifier_dropout == 0.1 and post.classifier_dropout == 0.1
    assert (post.norm_placement, post.qkv_bias, post.hidden_dropout) == ("post", True, 0.0)
    names = {n for n, _ in runs["budget"].named_parameters()}
    assert not any(n.endswith(("query.bias", "q.bias", "qkv.bias")) for n in names)
    assert any("final_norm" in n for n in names)
    # the HF-compatible variant exports and gives HF's logits; the pre-LN one is refused, naming why
    export_hf_dir(tmp_path / "budget-hf", tmp_path / "hf")
    hf_dir = tmp_path / "hf"
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(str(hf_dir)).eval()
    ids = torch.tensor([[2, 15, 27, 99, 3]])
    runs["budget-hf"].eval()
    with torch.no_grad():
        ours = runs["budget-hf"](ids).logits
        theirs = hf(input_ids=ids).logits
    assert torch.allclose(ours.reshape(theirs.shape), theirs, atol=1e-5)
    with pytest.raises(ConfigError, match="norm_placement='pre'"):
        export_hf_dir(tmp_path / "budget", tmp_path / "hf-pre")


def test_recipe_is_for_encoders(toy_shards, tmp_path, capsys):
    assert main(["pretrain", "--model", str(toy_shards["gpt"]), "--recipe", "budget", "--objective", "clm",
                 "--data", str(toy_shards["wordpiece"]), "--out", str(tmp_path / "g"), "--max-steps", "2",
                 "--no-progress"]) == 2
    assert "--recipe budget is for BERT-like encoders pre-trained with --objective mlm" in capsys.readouterr().err
    assert main(["pretrain", "--model", str(toy_shards["gpt"]), "--recipe", "budget", "--data",
                 str(toy_shards["wordpiece"]), "--out", str(tmp_path / "g"), "--max-steps", "2", "--no-progress"]) == 2
    assert "this model's family is gpt2" in capsys.readouterr().err
