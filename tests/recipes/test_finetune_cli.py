"""`lmforge finetune` speaks pretrain's vocabulary: --warmup (steps or a fraction), --max-steps, --precision,
--save-every + --resume, --no-progress and the progress bar, the same --seed default; the old spellings
(--warmup-ratio, --layer-decay, FinetuneConfig(layer_decay=, warmup_ratio=)) still work and say the new name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main


def _finetune(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["finetune", "--model", str(model), "--task", "glue-sst2", "--data", str(data), "--out", str(out),
                 "--train-split", "dev", "--max-length", "24", "--lr", "1e-3", *extra])


@pytest.fixture()
def spy(monkeypatch):
    """The TrainConfig the trainer really gets, per run."""
    import lmforge.train.loop as loop

    seen = []
    real = loop.Trainer.__init__

    def init(self, model, objective, source, config, **kw):
        seen.append(config)
        real(self, model, objective, source, config, **kw)

    monkeypatch.setattr(loop.Trainer, "__init__", init)
    return seen


def test_flags_reach_the_trainer(tiny_encoder, refdata, tmp_path, spy, capsys):
    data = refdata / "glue" / "SST-2"
    assert _finetune(tiny_encoder, data, tmp_path / "a", "--max-steps", "3", "--warmup", "2", "--precision", "fp32",
                     "--save-every", "2", "--no-progress") == 0
    (tc,) = spy
    assert (tc.max_steps, tc.warmup_steps, tc.warmup_ratio, tc.precision, tc.save_every, tc.progress) == \
        (3, 2, 0.0, "fp32", 2, False)
    assert tc.seed == 0  # one default for pretrain and finetune
    train = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in train) == 3
    assert (tmp_path / "a" / "checkpoints" / "step-00000002").is_dir()
    capsys.readouterr()
    # a fraction of the steps, as pretrain's --warmup < 1; the default is 0.1 of them
    assert _finetune(tiny_encoder, data, tmp_path / "b", "--max-steps", "2", "--warmup", "0.25") == 0
    assert _finetune(tiny_encoder, data, tmp_path / "c", "--max-steps", "2") == 0
    assert [(c.warmup_steps, c.warmup_ratio, c.save_every) for c in spy[1:]] == [(0, 0.25, None), (0, 0.1, None)]


def test_old_spellings_warn_and_still_work(tiny_encoder, refdata, tmp_path, spy, capsys):
    assert _finetune(tiny_encoder, refdata / "glue" / "SST-2", tmp_path / "o", "--max-steps", "1",
                     "--warmup-ratio", "0.3", "--layer-decay", "0.5") == 0
    err = capsys.readouterr().err
    assert "lmforge finetune: warning: --warmup-ratio is deprecated and will be removed; use --warmup" in err
    assert "lmforge finetune: warning: --layer-decay is deprecated and will be removed; use --layer-lr-decay" in err
    assert (spy[0].warmup_ratio, spy[0].layer_lr_decay) == (0.3, 0.5)
    help_text = " ".join(_help(capsys).split())
    assert "--layer-lr-decay" in help_text and "--warmup W" in help_text
    assert "--warmup-ratio" not in help_text and "--layer-decay" not in help_text  # hidden


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    return capsys.readouterr().out


def test_finetune_config_old_names_warn():
    from lmforge.recipes.finetune import FinetuneConfig, train_config
    from lmforge.tasks import get_task

    with pytest.warns(DeprecationWarning) as caught:
        old = FinetuneConfig(model="m", task="glue-cola", data="d", out="o", layer_decay=0.8, warmup_ratio=0.06)
    assert [str(w.message) for w in caught] == [
        "FinetuneConfig(layer_decay=) is deprecated; use layer_lr_decay= (same meaning)",
        "FinetuneConfig(warmup_ratio=) is deprecated; use warmup= (same meaning)"]
    assert caught[0].filename == __file__  # points at the caller
    assert (old.layer_lr_decay, old.warmup) == (0.8, 0.06)
    tc = train_config(FinetuneConfig(model="m", task="glue-cola", data="d", out="o", warmup=10), get_task("glue-cola"),
                      batch_size=8, max_length=16, steps_per_epoch=5)
    assert (tc.warmup_steps, tc.warmup_ratio) == (10, 0.0)


def test_progress_bar_with_loss_and_time_left_only_on_a_terminal(tiny_encoder, refdata, tmp_path, monkeypatch,
                                                                 capsys):
    from lmforge.commands import common

    data = refdata / "glue" / "SST-2"
    monkeypatch.setattr(common, "interactive", lambda: True)
    assert _finetune(tiny_encoder, data, tmp_path / "a", "--max-steps", "4", "--batch-size", "16") == 0
    err = capsys.readouterr().err
    bar = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("train:")]
    assert bar and "4/4" in bar[-1] and "loss=" in bar[-1] and "<" in bar[-1], err  # [elapsed<left]
    assert _finetune(tiny_encoder, data, tmp_path / "b", "--max-steps", "4", "--no-progress") == 0
    assert "train:" not in capsys.readouterr().err
    monkeypatch.setattr(common, "interactive", lambda: False)  # a pipe or a log file
    assert _finetune(tiny_encoder, data, tmp_path / "c", "--max-steps", "4") == 0
    assert "train:" not in capsys.readouterr().err


def test_save_every_and_resume_end_as_an_uninterrupted_run(tiny_encoder, refdata, tmp_path, monkeypatch, capsys):
    from lmforge.commands import common
    from lmforge.recipes import finetune as recipe

    data = refdata / "glue" / "SST-2"
    args = ("--max-steps", "6", "--save-every", "2", "--batch-size", "16", "--no-progress")
    assert _finetune(tiny_encoder, data, tmp_path / "ref", *args) == 0
    calls = [0]
    real = recipe.TaskObjective.loss

    def interrupted(self, model, batch):
        calls[0] += 1
        if calls[0] == 5:  # during step 5: the last checkpoint is step 4
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(recipe.TaskObjective, "loss", interrupted)
    assert _finetune(tiny_encoder, data, tmp_path / "run", *args) == 130
    monkeypatch.setattr(recipe.TaskObjective, "loss", real)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    capsys.readouterr()
    # the progress bar is not a setting a resume compares (off in a pipe, on at a terminal)
    monkeypatch.setattr(common, "interactive", lambda: True)
    assert _finetune(tiny_encoder, data, tmp_path / "run", *args[:-1], "--resume") == 0
    said = capsys.readouterr()
    assert "resumed from" in said.out + said.err and "step-00000004" in said.out + said.err
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "ref" / "metrics.json").read_text()) == \
        json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_bad_settings_name_the_flags(tmp_path, capsys):
    base = ["finetune", "--task", "glue-cola", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*base, "--model", "bert-tni"]) == 2
    assert capsys.readouterr().err == ("lmforge finetune: error: --model 'bert-tni' is neither a model directory nor "
                                       "a preset (`lmforge presets` lists them). Did you mean: bert-tiny, bert-mini, "
                                       "bert-medium?\n")
    assert main([*base, "--model", "m", "--max-steps", "0", "--save-every", "-1"]) == 2
    assert capsys.readouterr().err == ("lmforge finetune: error: impossible fine-tuning setting(s): --max-steps 0, "
                                       "--save-every -1\n")
