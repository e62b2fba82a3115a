"""Every command that joins a process group leaves it on every way out (lmforge.train.distributed's
``process_group_scope``): `lmforge finetune` and `lmforge distill` under torchrun (2 CPU processes, gloo)
exit 0 with the group destroyed in both processes, and the scope's ownership rules hold in one process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
# runs the CLI as `python -m lmforge` does, then says whether the process group is still there
PROBE = """import sys
import torch.distributed as dist
from lmforge.cli import main
rc = main(sys.argv[1:])
print(f"PROBE rank={dist.get_rank() if dist.is_initialized() else '-'} group_left={dist.is_initialized()}", flush=True)
sys.exit(rc)
"""
TINY = dict(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32, max_positions=64, hidden_dropout=0.0,
            attention_dropout=0.0)


@pytest.fixture(scope="module")
def files(toy_shards, tmp_path_factory) -> dict[str, Path]:
    """The toy SST-2 task, a tiny encoder (mlm head) over the toy WordPiece tokenizer, the probe script."""
    from lmforge import Model, ModelConfig, Tokenizer
    from lmforge.data.toyland.tasks import write_tasks

    root = tmp_path_factory.mktemp("teardown")
    write_tasks(root / "tasks", examples=64, seed=0)
    tok = Tokenizer.from_pretrained(toy_shards["tok-wordpiece"])
    torch.manual_seed(0)
    Model(ModelConfig.from_preset("bert-tiny", head="mlm", vocab_size=len(tok), **TINY)).save_pretrained(root / "enc")
    tok.save_pretrained(root / "enc")
    (root / "probe.py").write_text(PROBE)
    return {"tasks": root / "tasks", "enc": root / "enc", "probe": root / "probe.py", "shards": toy_shards["wordpiece"]}


def _torchrun(files: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(files["probe"]), *args], env=env, capture_output=True, text=True, timeout=300)


def _check_clean_exit(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stderr[-3000:]
    # found anywhere in a line: the two processes share one stdout pipe, so one's line can land inside the other's
    probes = sorted(re.findall(r"PROBE rank=[-0-9]+ group_left=(?:True|False)", res.stdout))
    # the group is gone in both processes (rank '-': get_rank() needs a group)
    assert probes == ["PROBE rank=- group_left=False"] * 2, res.stdout[-2000:]
    for bad in ("destroy_process_group() was not called", "terminate called", "Traceback"):
        assert bad not in res.stderr, res.stderr[-3000:]


@pytest.mark.slow
def test_finetune_under_torchrun_leaves_the_process_group(files, tmp_path):
    res = _torchrun(files, "finetune", "--model", str(files["enc"]), "--task", "glue-sst2", "--data",
                    str(files["tasks"] / "sst2"), "--out", str(tmp_path / "ft"), "--max-length", "24",
                    "--batch-size", "8", "--max-steps", "2", "--no-progress")
    _check_clean_exit(res)
    assert (tmp_path / "ft" / "metrics.json").is_file()
    # one process speaks: the scores and the log lines once, not once per rank
    assert res.stdout.count("glue-sst2: accuracy") == 1, res.stdout[-2000:]
    assert res.stderr.count("fine-tuning on ") == 1, res.stderr[-2000:]


@pytest.mark.slow
def test_distill_under_torchrun_leaves_the_process_group(files, tmp_path):
    res = _torchrun(files, "distill", "--teacher", str(files["enc"]), "--data", str(files["shards"]), "--out",
                    str(tmp_path / "student"), "--student-layers", "1", "--batch-size", "4", "--seq-len", "32",
                    "--max-steps", "2", "--val-batches", "0", "--no-progress")
    _check_clean_exit(res)
    assert (tmp_path / "student" / "model.safetensors").is_file()


def test_an_error_under_torchrun_still_leaves_the_process_group(files, tmp_path):
    """An LmforgeError raised after the group was joined (here: the Trainer finds fewer examples than one
    optimizer step over 2 processes): exit 2, the group left without waiting for a barrier."""
    res = _torchrun(files, "finetune", "--model", str(files["enc"]), "--task", "glue-sst2", "--data",
                    str(files["tasks"] / "sst2"), "--out", str(tmp_path / "ft"), "--max-length", "24",
                    "--max-steps", "2", "--batch-size", "100000", "--no-progress")
    assert res.returncode != 0 and "error:" in res.stderr, res.stderr[-3000:]
    # found anywhere in a line: the two processes share one stdout pipe, so one's line can land inside the other's
    probes = sorted(re.findall(r"PROBE rank=[-0-9]+ group_left=(?:True|False)", res.stdout))
    assert probes == ["PROBE rank=- group_left=False"] * 2, (res.stdout[-2000:], res.stderr[-2000:])
    assert "terminate called" not in res.stderr
