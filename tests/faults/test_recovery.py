"""The fault campaign's fast cases: SIGKILL (also inside a checkpoint write) + --resume is bitwise exact; a
cut, altered or incomplete newest checkpoint is moved aside and the one before used (said, nothing deleted);
a full disk while writing leaves the previous checkpoint and a resumable run; NaN stops or skips naming the
step; SIGTERM checkpoints at the step boundary and exits 0; nothing is unpickled beyond plain data.
The 20-kill campaign is ``python benchmarks/faults.py``."""
from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.errors import CheckpointError
from lmforge.train import TrainConfig, Trainer, TrainingDiverged, list_source
from lmforge.train import checkpoint as ckpt
from lmforge.train.logging import read_metrics
from lmforge.train.loop import seed_everything

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "train"))
import toy  # noqa: E402


def _trainer(out: Path, fmt: str = "ddp", *, nan_at: int | None = None, on_nan: str = "stop", steps: int = 8,
             save_every: int | None = 2):
    seed_everything(0)
    cfg = TrainConfig(max_steps=steps, batch_size=8, lr=3e-3, warmup_steps=2, save_every=save_every, keep=3, log_every=1,
                      progress=False, distributed=fmt, on_nan=on_nan)
    source = list_source(toy.toy_examples(), toy.collate, batch_size=8, seed=1)
    return Trainer(toy.ToyLM(), toy.ToyObjective(nan_at), source, cfg, out_dir=out)


def _as_killed_after(run: Path, step: int, dst: Path) -> Path:
    """A copy of finished ``run`` as if killed right after checkpoint ``step``: later state removed."""
    shutil.copytree(run, dst)
    for p in (dst / "checkpoints").iterdir():
        if int(p.name.split("-")[1]) > step:
            shutil.rmtree(p)
    for name in ("model.safetensors", "trainer_state.json", "loss.png"):
        (dst / name).unlink(missing_ok=True)
    return dst


def _same_final(a: Path, b: Path) -> None:
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert [r["loss"] for r in read_metrics(a) if r["split"] == "train"] == \
        [r["loss"] for r in read_metrics(b) if r["split"] == "train"]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    _trainer(root / "ddp").train()
    _trainer(root / "fsdp", "fsdp").train()
    return {"ddp": root / "ddp", "fsdp": root / "fsdp"}


def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


DAMAGE = {  # (checkpoint format, file of the newest checkpoint, what happens to it)
    "cut weights": ("ddp", "model.safetensors", _cut),
    "flipped byte in the optimizer state": ("ddp", "optimizer.pt", _flip),
    "missing rng state": ("ddp", "rng.pt", Path.unlink),
    "unreadable trainer state": ("ddp", "trainer_state.json", _cut),
    "missing shard": ("fsdp", "dcp/__0_0.distcp", Path.unlink),
    "flipped byte in a shard": ("fsdp", "dcp/__0_0.distcp", _flip),
    "cut dcp metadata": ("fsdp", "dcp/.metadata", _cut),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(refs, tmp_path, capsys, case):
    fmt, name, damage = DAMAGE[case]
    run = _as_killed_after(refs[fmt], 6, tmp_path / "run")
    damage(run / "checkpoints" / "step-00000006" / name)
    _trainer(run, fmt).train(resume=True)
    said = capsys.readouterr().out
    assert "checkpoint step-00000006 is damaged" in said and "falling back to step-00000004" in said, said
    assert "resumed from" in said and "step-00000004" in said
    assert (run / "checkpoints" / "damaged-step-00000006").is_dir()  # moved aside, not deleted
    _same_final(refs[fmt], run)


def test_a_full_disk_while_writing_keeps_the_previous_checkpoint_and_the_run_resumable(refs, tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    real = dcp.save
    calls = {"n": 0}

    def full(*a, **k):  # the third checkpoint (step 6) hits a full disk
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(dcp, "save", full)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="No space left on device.*step-00000004 is intact"):
        _trainer(run, "fsdp").train()
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004"]  # no temporary left
    assert ckpt.verify_checkpoint(root / "step-00000004") is None
    monkeypatch.setattr(dcp, "save", real)
    _trainer(run, "fsdp").train(resume=True)
    _same_final(refs["fsdp"], run)


def test_nan_stops_or_skips_naming_the_step(tmp_path, capsys):
    # toy objective: one micro-batch per step; NaN from call 5 on = steps 5 .. 8
    with pytest.raises(TrainingDiverged, match="at step 5.*step-00000004"):
        _trainer(tmp_path / "stop", nan_at=5).train()
    assert ckpt.list_checkpoints(tmp_path / "stop" / "checkpoints")[-1].name == "step-00000004"
    _trainer(tmp_path / "skip", nan_at=5, on_nan="skip").train()
    said = capsys.readouterr().out
    assert all(f"step {s}: the loss is nan; its update was skipped" in said for s in (5, 6, 7, 8)), said
    # no update after step 4: the final weights are checkpoint 4's
    final = ckpt.load_checkpoint(tmp_path / "skip" / "checkpoints" / "step-00000004")["weights"]
    assert (tmp_path / "skip" / "model.safetensors").read_bytes() != b""
    from safetensors.torch import load_file

    a, b = load_file(str(final)), load_file(str(tmp_path / "skip" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_files_load_without_pickled_objects(refs):
    for fmt in ("ddp", "fsdp"):
        step = refs[fmt] / "checkpoints" / "step-00000008"
        for pt in step.glob("*.pt"):
            torch.load(pt, weights_only=True)  # raises on anything but tensors, numbers, strings, containers
        assert ckpt.verify_checkpoint(step) is None


def test_every_torch_load_passes_weights_only_true():
    offenders = []
    for file in sorted((REPO / "lmforge").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    offenders.append(f"{file.relative_to(REPO)}:{node.lineno}")
    assert offenders == [], f"torch.load without weights_only=True: {offenders}"
    # the scan sees calls: one it must find
    assert "weights_only=True" in (REPO / "lmforge" / "train" / "checkpoint.py").read_text()


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_then_resume_is_bitwise_exact(tmp_path, benchmark_module):
    """One row of the campaign: SIGKILL while a checkpoint's files are half written, then --resume (a kill at a
    random moment is tests/train/test_loop.py's; the 20 kills are `python benchmarks/faults.py`)."""
    import random

    faults = benchmark_module("faults")
    plan = faults.Plan(steps=20, pause=0.2)
    faults._reference(tmp_path / "ref", "plain", 1, plan)
    row = faults.one_kill(1, tmp_path / "ref", tmp_path, fmt="plain", procs=1, moment="checkpoint write", at=0.0,
                          rng=random.Random(0), plan=plan)
    assert row.in_write and row.identical, row


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_boundary_exits_0_and_resume_continues(base, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "lmforge", "pretrain", "--model", str(base["model"]), "--data",
                str(base["shards"]), "--out", str(out), "--max-steps", "150", "--save-every", "100", "--batch-size",
                "2", "--seq-len", "16", "--val-batches", "0", "--log-every", "1", "--no-progress", "--device", "cpu"]

    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen(cmd(tmp_path / "run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(_lines(tmp_path / "run" / "metrics.jsonl")) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM after step" in err and "to continue, run:" in err and "--resume" in err, err
    stopped = json.loads(_lines(tmp_path / "run" / "metrics.jsonl")[-1])["step"]
    assert stopped < 150 and (tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(stopped)).is_dir()
    done = subprocess.run(cmd(tmp_path / "run") + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from" in done.stdout
    _same_final(tmp_path / "ref", tmp_path / "run")


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    """Under torchrun (2 processes, FSDP) only rank 1 gets SIGTERM: the flag is all-reduced, so both ranks
    write the sharded checkpoint of the same step and exit 0 (torchrun too)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(REPO / "tests" / "train" / "toy.py"), str(out), "--model", "gpt", "--steps", "200",
                             "--global-batch", "16", "--distributed", "fsdp", "--sleep", "0.02"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_lines(out / "metrics.jsonl")) < 2:
        time.sleep(0.01)
    ranks = {}
    for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next(e for e in environ if e.startswith(b"RANK=")).split(b"=")[1]
        ranks[int(rank)] = int(pid)
    os.kill(ranks[1], signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped by SIGTERM after step" in err, err[-3000:]
    stopped = json.loads(_lines(out / "metrics.jsonl")[-1])["step"]
    assert stopped < 200
    step = out / "checkpoints" / ckpt.checkpoint_name(stopped)
    assert ckpt.verify_checkpoint(step) is None
    assert sorted(p.name for p in (step / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]


def _lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text().splitlines() if x.strip()]
    except OSError:
        return []


@pytest.fixture
def small_fs(tmp_path):
    """A real 4 MiB tmpfs (root only: skipped where mount is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fmt", ["ddp", "fsdp"])
@pytest.mark.parametrize("left_kib", [24, 0])
def test_a_really_full_disk_keeps_the_previous_checkpoint_and_the_run_resumable(small_fs, tmp_path, fmt, left_kib):
    """Not an injected error: the run's disk really fills (a filler file leaves 24 KiB, less than a checkpoint,
    or nothing: then another writer is the first to fail)."""
    ref = tmp_path / "ref"
    _trainer(ref, fmt, steps=4).train()
    _trainer(ref, fmt, steps=8).train(resume=True)  # continued to 8 steps, as the run below
    run = small_fs / "run"
    _trainer(run, fmt, steps=4).train()
    filler = small_fs / "filler"
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (free - left_kib * 1024))
    with pytest.raises(CheckpointError, match=r"could not write checkpoint step-00000006 .* MiB free\); the "
                       r"previous checkpoint .*step-00000004 is intact\. Free disk space"):
        _trainer(run, fmt, steps=8).train(resume=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert ckpt.verify_checkpoint(run / "checkpoints" / "step-00000004") is None
    filler.unlink()  # space freed: the run resumes and ends as if nothing happened
    _trainer(run, fmt, steps=8).train(resume=True)
    _same_final(ref, run)


def test_a_disk_full_outside_a_checkpoint_write_is_one_message(small_fs):
    """The disk is full before the run writes anything (metrics.jsonl is the first file): a CheckpointError
    saying so, not a traceback."""
    filler = small_fs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # every byte
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(CheckpointError, match=r"is full .*after step \d+; no checkpoint was written.*--resume"):
        _trainer(small_fs / "run", steps=4, save_every=None).train()
