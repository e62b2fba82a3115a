"""FSDP2 on CPU (gloo): 2 processes == 1 on the same global batch with a tied-embedding GPT, every rank's
shard of the tied matrix trains, and sharded (DCP) checkpoints resume on the same and another number of
processes (2 -> 1, 1 -> 2)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TOY = Path(__file__).parent / "toy.py"
REPO = Path(__file__).resolve().parents[2]
# a tied-embedding GPT, dropout off (ranks draw their own masks), global batch 16 = 2 x 8 or 1 x 2 x 8
COMMON = ["--model", "gpt", "--dropout", "0", "--steps", "6", "--save-every", "3", "--global-batch", "16",
          "--distributed", "fsdp"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(out: Path, *args: str, procs: int = 1) -> subprocess.CompletedProcess:
    launch = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(procs)]
    res = subprocess.run([*launch, str(TOY), str(out), *COMMON, *args], env=_env(), capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def _losses(out: Path) -> torch.Tensor:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return torch.tensor([json.loads(x)["loss"] for x in lines if json.loads(x)["split"] == "train"])


def _close(a: Path, b: Path) -> None:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == 6 and torch.allclose(la, lb, rtol=1e-5, atol=1e-6), (la, lb)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), k


def _killed_after_step_3(src: Path, dst: Path) -> Path:
    """A copy of finished run ``src`` as a run killed after checkpoint 3: later state removed."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "checkpoints" / "step-00000006")
    for name in ("model.safetensors", "trainer_state.json", "config.json", "loss.png"):
        (dst / name).unlink(missing_ok=True)
    lines = (dst / "metrics.jsonl").read_text().splitlines()
    (dst / "metrics.jsonl").write_text("\n".join(x for x in lines if json.loads(x)["step"] <= 3) + "\n")
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    _run(root / "one", "--shards", str(root / "one-shards"))
    _run(root / "two", "--shards", str(root / "two-shards"), procs=2)
    return {"root": root, "one": root / "one", "two": root / "two"}


@pytest.mark.slow
def test_two_fsdp_processes_match_one_and_every_shard_of_the_tied_matrix_trains(runs):
    one, two, root = runs["one"], runs["two"], runs["root"]
    _close(one, two)
    # the final model.safetensors is one ordinary file, gathered from the shards; the tied decoder has no copy
    weights = load_file(str(two / "model.safetensors"))
    assert weights["body.embeddings.word.weight"].shape == (51, 32) and not any("decoder" in k for k in weights)
    ckpt = two / "checkpoints" / "step-00000006"
    assert sorted(p.name for p in (ckpt / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (ckpt / "model.safetensors").exists() and (ckpt / "manifest.json").is_file()
    # uneven shards of the 51-row tied matrix (26 + 25 rows): each rank's own rows moved (pytorch #176076),
    # and together they are the gathered final matrix
    rows = []
    for rank, part in enumerate(torch.chunk(torch.arange(51), 2)):
        held = torch.load(f"{root / 'two-shards'}.rank{rank}", weights_only=True)
        assert held["after"].shape[0] == len(part)
        assert not torch.allclose(held["after"], held["before"][part]), f"rank {rank}'s shard never changed"
        rows.append(held["after"])
    assert torch.equal(torch.cat(rows), weights["body.embeddings.word.weight"])


@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_two_one_and_again_two_processes(runs):
    one, two, root = runs["one"], runs["two"], runs["root"]
    # 1 -> 1: bitwise
    same = _killed_after_step_3(one, root / "one-again")
    res = _run(same, "--resume")
    assert "resumed from" in res.stdout
    assert (same / "model.safetensors").read_bytes() == (one / "model.safetensors").read_bytes()
    assert torch.equal(_losses(same), _losses(one))
    # 2 -> 1 and 1 -> 2: the same training within float tolerance (another summation order)
    down = _killed_after_step_3(two, root / "two-to-one")
    res = _run(down, "--resume")
    assert "re-sharding from 2 to 1 process(es)" in res.stdout
    _close(down, two)
    up = _killed_after_step_3(one, root / "one-to-two")
    res = _run(up, "--resume", procs=2)
    assert "re-sharding from 1 to 2 process(es)" in res.stdout
    _close(up, one)
