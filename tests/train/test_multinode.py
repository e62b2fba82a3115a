"""Two "nodes" x 1 process on loopback, as docs/distributed.md's multi-node recipe starts them:
``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:PORT`` once per node.
The job trains with FSDP and sharded checkpoints and matches one process on the same global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TOY = Path(__file__).parent / "toy.py"
REPO = Path(__file__).resolve().parents[2]
ARGS = ["--model", "gpt", "--dropout", "0", "--steps", "4", "--save-every", "2", "--global-batch", "16",
        "--distributed", "fsdp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out: Path) -> torch.Tensor:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return torch.tensor([r["loss"] for r in rows if r["split"] == "train"])


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "lmforge-test",
                               "--max-restarts", "0", str(TOY), str(tmp_path / "two"), *ARGS],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    one = subprocess.run([sys.executable, str(TOY), str(tmp_path / "one"), *ARGS], env=env, capture_output=True,
                         text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    for node in nodes:
        out, err = node.communicate(timeout=180)
        assert node.returncode == 0, err[-3000:]
    assert json.loads((tmp_path / "two" / "trainer_state.json").read_text())["world_size"] == 2
    shards = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-00000004" / "dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == 4 and torch.allclose(l1, l2, rtol=1e-5, atol=1e-6), (l1, l2)
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
