"""The loop on a stand-in model: exact resume after SIGKILL, DDP == one process, NaN, atomic saves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.errors import CheckpointError, ConfigError, DataError
from lmforge.train import TrainConfig, Trainer, TrainingDiverged, list_source
from lmforge.train import checkpoint as ckpt
from lmforge.train.logging import read_metrics
from lmforge.train.loop import seed_everything

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402

TOY = Path(__file__).parent / "toy.py"
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run_toy(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOY), str(out), *args], env=_env(), capture_output=True, text=True,
                          timeout=120)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_sigkill_and_resume_is_bitwise_exact(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _run_toy(ref, "--steps", "30", "--save-every", "4").returncode == 0
    proc = subprocess.Popen([sys.executable, str(TOY), str(run), "--steps", "30", "--save-every", "4",
                             "--sleep", "0.02"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "checkpoints" / "step-00000012").exists():
        time.sleep(0.01)
    time.sleep(0.03)  # kill at an arbitrary point, possibly during the next save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists(), "the run finished before it was killed"
    done = _run_toy(run, "--steps", "30", "--save-every", "4", "--resume")
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout and "nothing replayed" in done.stdout
    _assert_same_weights(ref, run)
    # metrics.jsonl reads as one run: every step once, the same losses as the uninterrupted run
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == list(range(1, 31))
    ref_loss = [r["loss"] for r in read_metrics(ref)]
    assert [r["loss"] for r in read_metrics(run)] == ref_loss


def test_resume_from_every_checkpoint_in_process(tmp_path):
    """Stop (exception) after step 7 and resume: same weights as straight through; keep-last-K prunes."""
    def make(out, nan_at=None):
        seed_everything(0)
        model = toy.ToyLM()
        cfg = TrainConfig(max_steps=12, batch_size=8, global_batch_size=16, lr=3e-3, warmup_steps=2,
                          save_every=3, keep=2, log_every=2, progress=False)
        source = list_source(toy.toy_examples(), toy.collate, batch_size=8, seed=1)
        return Trainer(model, toy.ToyObjective(nan_at), source, cfg, out_dir=out)

    make(tmp_path / "a").train()
    with pytest.raises(TrainingDiverged, match="at step 8") as err:  # 2 micro-batches per step: call 15 is step 8
        make(tmp_path / "b", nan_at=15).train()
    assert "step-00000006" in str(err.value)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "b" / "checkpoints")] == ["step-00000003", "step-00000006"]
    state = json.loads((tmp_path / "b/checkpoints/step-00000006/trainer_state.json").read_text())
    assert state["data_position"] == {"epoch": 0, "micro_step": 12, "accumulation_steps": 2, "steps_per_epoch": 16}
    make(tmp_path / "b").train(resume=True)
    _assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000


def test_existing_run_needs_resume_and_same_settings(tmp_path):
    seed_everything(0)
    cfg = TrainConfig(max_steps=4, batch_size=8, save_every=2, progress=False)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path).train()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path).train()
    with pytest.raises(ConfigError, match="seed 0 -> 5"):
        Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg.replace(seed=5), out_dir=tmp_path).train(resume=True)


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    seed_everything(0)
    cfg = TrainConfig(max_steps=6, batch_size=8, save_every=2, progress=False)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    real_save = torch.save
    calls = {"n": 0}

    def flaky(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # the second checkpoint (3 torch.save calls each) hits a full disk
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky)
    with pytest.raises(CheckpointError, match="step-00000002 is intact"):
        Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path).train()
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000002"]  # no half-written temporary left
    loaded = ckpt.load_checkpoint(root / "step-00000002")
    assert loaded["trainer_state"]["step"] == 2
    ckpt.load_weights(toy.ToyLM(), loaded["weights"])


def test_batch_larger_than_data(tmp_path):
    src = list_source(toy.toy_examples(20), toy.collate, batch_size=8)
    with pytest.raises(DataError, match="fewer than one optimizer step"):
        Trainer(toy.ToyLM(), toy.ToyObjective(), src, TrainConfig(max_steps=2, batch_size=8, global_batch_size=32),
                out_dir=tmp_path)
    with pytest.raises(DataError, match="fewer than one global batch"):
        list_source(toy.toy_examples(5), toy.collate, batch_size=8)


def test_compile_on_cpu(tmp_path):
    pytest.importorskip("torch._dynamo")
    seed_everything(0)
    cfg = TrainConfig(max_steps=3, batch_size=8, compile=True, progress=False, log_every=1)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    result = Trainer(toy.ToyLM(0.0), toy.ToyObjective(), src, cfg, out_dir=tmp_path).train()
    assert result.step == 3
    # compiled and eager runs agree
    seed_everything(0)
    eager = Trainer(toy.ToyLM(0.0), toy.ToyObjective(), src, cfg.replace(compile=False),
                    out_dir=tmp_path / "eager").train()
    assert eager.final_loss == pytest.approx(result.final_loss, rel=1e-4)


def test_keep_best_early_stopping_and_load_best(tmp_path):
    """evaluate every 2 steps; scripted scores peak at the 2nd evaluation; patience 2 stops at step 8."""
    seed_everything(0)
    scores = iter([0.5, 0.9, 0.7, 0.8, 0.95])
    snapshots = {}

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()
        value = next(scores)
        snapshots[value] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"accuracy": value}

    cfg = TrainConfig(max_steps=20, batch_size=8, eval_every=2, best_metric="accuracy", best_mode="max", patience=2,
                      load_best_at_end=True, progress=False, log_every=1)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    trainer = Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path, evaluate=evaluate)
    result = trainer.train()
    assert (result.stopped, result.step, result.best_metric, result.best_step) == ("early_stopping", 8, 0.9, 4)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 4
    # the final weights are best/'s file, linked rather than written and fsync'd a second time
    assert os.path.samefile(tmp_path / "model.safetensors", tmp_path / "best" / "model.safetensors")
    assert not (tmp_path / "best.json").exists()
    final = _weights(tmp_path)
    for k, v in snapshots[0.9].items():  # the final model is the best one, in memory and on disk
        assert torch.equal(final[k], v) and torch.equal(trainer.model.state_dict()[k], v)
    val = [r for r in read_metrics(tmp_path) if r["split"] == "val"]
    assert [(r["step"], r["accuracy"]) for r in val] == [(2, 0.5), (4, 0.9), (6, 0.7), (8, 0.8)]


def test_evaluation_every_epoch(tmp_path):
    seed_everything(0)
    seen = []
    cfg = TrainConfig(epochs=2, batch_size=64, eval_every_epoch=True, lr=1e-3, head_lr=1e-2, progress=False)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=64)  # 256 examples: 4 steps per epoch
    trainer = Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path,
                      evaluate=lambda m: seen.append(1) or {"x": 1.0})
    assert trainer.train().step == 8 and len(seen) == 2


# ----------------------------------------------------------------------------- resume rules, Ctrl-C

def _toy_trainer(out: Path, cfg: TrainConfig, *, objective=None, run_config=None) -> Trainer:
    seed_everything(0)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=cfg.batch_size, seed=cfg.seed)
    return Trainer(toy.ToyLM(), objective or toy.ToyObjective(), src, cfg, out_dir=out, run_config=run_config)


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``out`` with its mtime and content: a run that touches nothing leaves it equal."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file()}


# constant lr: a run continued to a longer length is then exactly a straight run of that length
CONSTANT = TrainConfig(max_steps=6, batch_size=8, lr=3e-3, schedule="constant", save_every=3, keep=2, log_every=1,
                       progress=False)


def test_resume_of_a_finished_run_touches_nothing_unless_its_length_grows(tmp_path):
    _toy_trainer(tmp_path / "a", CONSTANT).train()
    before = _snapshot(tmp_path / "a")
    result = _toy_trainer(tmp_path / "a", CONSTANT).train(resume=True)
    assert (result.stopped, result.step) == ("already_complete", 6)
    assert _snapshot(tmp_path / "a") == before
    # a longer run continues from the checkpoint written at the end: the same as 9 steps straight
    assert _toy_trainer(tmp_path / "a", CONSTANT.replace(max_steps=9)).train(resume=True).step == 9
    _toy_trainer(tmp_path / "b", CONSTANT.replace(max_steps=9)).train()
    _assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert [r["step"] for r in read_metrics(tmp_path / "a")] == list(range(1, 10))
    # without --save-every no checkpoint is kept at the end: a longer run is refused, not restarted
    _toy_trainer(tmp_path / "c", CONSTANT.replace(save_every=None)).train()
    before = _snapshot(tmp_path / "c")
    with pytest.raises(ConfigError, match="finished at step 6 without a checkpoint at that step"):
        _toy_trainer(tmp_path / "c", CONSTANT.replace(save_every=None, max_steps=9)).train(resume=True)
    assert _snapshot(tmp_path / "c") == before


def test_resume_with_other_settings_lists_every_difference(tmp_path):
    run = {"objective": "clm", "data": "/shards/a"}
    _toy_trainer(tmp_path, CONSTANT, run_config=run).train()
    before = _snapshot(tmp_path)
    # max_steps, save_every and log_every may change; lr and weight_decay may not, nor the caller's objective
    changed = CONSTANT.replace(max_steps=8, lr=1e-3, weight_decay=0.1, save_every=4, log_every=2)
    with pytest.raises(ConfigError) as err:
        _toy_trainer(tmp_path, changed, run_config={**run, "objective": "mlm"}).train(resume=True)
    message = str(err.value)
    assert "3 setting(s) differ" in message and "--allow-changes" in message, message
    for part in ("lr 0.003 -> 0.001", "weight_decay 0.01 -> 0.1", "objective 'clm' -> 'mlm'"):
        assert part in message, message
    assert _snapshot(tmp_path) == before
    with pytest.raises(ConfigError, match="another optimizer"):  # its state would not fit: refused even then
        lamb = CONSTANT.replace(max_steps=8, optimizer="lamb")
        _toy_trainer(tmp_path, lamb, run_config=run).train(resume=True, allow_changes=True)
    # accepted: the new learning rate and weight decay are the ones the continued steps use
    trainer = _toy_trainer(tmp_path, changed, run_config=run)
    assert trainer.train(resume=True, allow_changes=True).step == 8
    records = {r["step"]: r for r in read_metrics(tmp_path)}
    assert records[6]["lr"] == 3e-3 and records[8]["lr"] == 1e-3
    optimizer_state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "step-00000008")["optimizer"]
    assert {g["weight_decay"] for g in optimizer_state["param_groups"]} == {0.0, 0.1}  # none on biases / norms


class _CtrlC(toy.ToyObjective):
    """Sends SIGINT to this process during the loss of the given calls (as a Ctrl-C mid-step would)."""

    def __init__(self, at_calls: set[int]) -> None:
        super().__init__()
        self.at_calls = at_calls

    def loss(self, model, batch):
        if self.calls + 1 in self.at_calls:
            os.kill(os.getpid(), signal.SIGINT)
        return super().loss(model, batch)


def test_ctrl_c_checkpoints_at_the_step_boundary_and_resume_is_exact(tmp_path):
    from lmforge.train import TrainingInterrupted

    cfg = TrainConfig(max_steps=10, batch_size=8, global_batch_size=16, lr=3e-3, warmup_steps=2, log_every=1,
                      progress=False)  # no --save-every: Ctrl-C writes a checkpoint anyway
    _toy_trainer(tmp_path / "ref", cfg).train()
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN when the shell started us in the background
    with pytest.raises(TrainingInterrupted) as err:  # 2 micro-batches per step: call 7 is in step 4
        _toy_trainer(tmp_path / "run", cfg, objective=_CtrlC({7})).train()
    assert (err.value.step, err.value.written) == (4, True)
    assert err.value.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000004"
    assert "interrupted after step 4 of 10; checkpoint written" in str(err.value)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    _toy_trainer(tmp_path / "run", cfg).train(resume=True)
    _assert_same_weights(tmp_path / "ref", tmp_path / "run")
    assert [r["loss"] for r in read_metrics(tmp_path / "run")] == [r["loss"] for r in read_metrics(tmp_path / "ref")]
    # a second Ctrl-C stops at once: no new checkpoint, the newest earlier one is named
    with pytest.raises(TrainingInterrupted) as err:
        _toy_trainer(tmp_path / "twice", cfg.replace(save_every=2), objective=_CtrlC({7, 8})).train()
    assert (err.value.step, err.value.written) == (3, False)
    assert err.value.checkpoint == tmp_path / "twice" / "checkpoints" / "step-00000002"
    assert "no checkpoint was written then" in str(err.value)


class _WithHelper(toy.ToyObjective):
    """An objective owning a helper network that shares the model's embedding (as ELECTRA's generator does)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.helper = torch.nn.Module()
        self.helper.embeddings = model.body.embeddings  # the same module: one tensor
        self.helper.proj = torch.nn.Linear(32, toy.VOCAB)

    def extra_modules(self):
        return {"helper": self.helper}

    def loss(self, model, batch):
        loss, metrics = super().loss(model, batch)
        h = self.helper.proj(self.helper.embeddings(batch["input_ids"]))
        extra = torch.nn.functional.cross_entropy(h.reshape(-1, toy.VOCAB), batch["input_ids"].reshape(-1))
        return loss + extra, metrics


def test_extra_networks_sharing_tensors_train_once_and_must_match_on_resume(tmp_path):
    seed_everything(0)
    model = toy.ToyLM()
    objective = _WithHelper(model)
    cfg = TrainConfig(max_steps=4, batch_size=8, save_every=2, progress=False, lr=1e-2)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    trainer = Trainer(model, objective, src, cfg, out_dir=tmp_path)
    names = [n for n, _ in trainer._named_parameters()]
    assert names.count("body.embeddings.weight") == 1 and not any(n.startswith("objective.helper.embeddings")
                                                                  for n in names)
    before = objective.helper.proj.weight.detach().clone()
    trainer.train()  # an optimizer given one tensor twice would refuse to build
    assert not torch.equal(before, objective.helper.proj.weight)
    assert model.body.embeddings is objective.helper.embeddings
    assert (tmp_path / "checkpoints" / "step-00000002" / "extra-helper.safetensors").is_file()
    with pytest.raises(ConfigError, match=r"network\(s\) \['helper'\].*trains none"):
        Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg.replace(max_steps=6), out_dir=tmp_path).train(resume=True)
