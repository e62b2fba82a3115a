"""FSDP2 on CPU (gloo): 2 processes == 1 on the same global batch with a tied-embedding GPT, every rank's
shard of the tied matrix trains, and sharded (DCP) checkpoints resume on the same and another number of
processes (2 -> 1, 1 -> 2); a model built on the meta device; the GPT-3 presets build without memory."""
from __future__ import annotations

import json
import math
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
    # with activation recomputation inside the sharded blocks: the same training
    _run(root / "two", "--shards", str(root / "two-shards"), "--grad-ckpt", procs=2)
    return {"root": root, "one": root / "one", "two": root / "two"}


@pytest.mark.slow
def test_two_fsdp_processes_with_grad_checkpointing_match_one_and_every_shard_of_the_tied_matrix_trains(runs):
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
def test_sharded_checkpoint_resumes_on_another_number_of_processes(runs):
    one, two, root = runs["one"], runs["two"], runs["root"]
    # (same number of processes: bitwise, tests/faults/test_recovery.py and benchmarks/faults.py)
    # 2 -> 1 and 1 -> 2: the same training within float tolerance (another summation order)
    down = _killed_after_step_3(two, root / "two-to-one")
    res = _run(down, "--resume")
    assert "re-sharding from 2 to 1 process(es)" in res.stdout
    _close(down, two)
    up = _killed_after_step_3(one, root / "one-to-two")
    res = _run(up, "--resume", procs=2)
    assert "re-sharding from 1 to 2 process(es)" in res.stdout
    _close(up, one)


@pytest.mark.slow
def test_a_model_built_on_the_meta_device_is_allocated_and_initialised_shard_by_shard(tmp_path):
    """--meta: the GPT is built without memory; each of 2 FSDP processes allocates and initialises its own
    shards (seeded per rank), and the run trains from a proper init: first loss about ln(vocabulary)."""
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(TOY), str(tmp_path / "meta"), *COMMON[:COMMON.index("--steps")], "--steps", "2",
                          "--save-every", "2", "--global-batch", "16", "--distributed", "fsdp", "--meta"],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    first = float(_losses(tmp_path / "meta")[0])
    assert abs(first - math.log(50)) < 0.3, first  # an uninitialised (to_empty) model would be far off
    w = load_file(str(tmp_path / "meta" / "model.safetensors"))
    emb = w["body.embeddings.word.weight"]
    assert 0.01 < float(emb.std()) < 0.04  # initializer_range 0.02, two small steps later
    assert not torch.allclose(emb[:25], emb[26:51], atol=1e-3)  # the ranks' shards are not copies of each other
    assert torch.allclose(w["body.final_norm.weight"], torch.ones(32), atol=0.05)


@pytest.mark.parametrize("preset", ["gpt3-175b", "gpt3-13b", "gpt3-xl"])
def test_gpt3_presets_build_on_the_meta_device_without_memory(preset):
    from lmforge import Model, ModelConfig
    from lmforge.train.distributed import on_meta

    with torch.device("meta"):
        model = Model(ModelConfig.from_preset(preset, head="clm"))
    assert on_meta(model) and all(p.device.type == "meta" for p in model.parameters())
    billions = {"gpt3-175b": 175, "gpt3-13b": 13, "gpt3-xl": 1.3}[preset]
    assert abs(model.num_parameters() / 1e9 - billions) / billions < 0.05


def test_another_number_of_processes_with_another_global_batch_is_refused_naming_the_flag(tmp_path):
    """A run saved on 2 processes x 1 micro-batch resumed on 1 process without --global-batch-size would
    take half the global batch: refused, naming the flag and value that keep it."""
    sys.path.insert(0, str(Path(__file__).parent))
    import toy

    from lmforge.errors import ConfigError
    from lmforge.train import TrainConfig, Trainer, list_source
    from lmforge.train import checkpoint as ckpt

    def trainer(out: Path) -> Trainer:
        cfg = TrainConfig(max_steps=4, batch_size=8, save_every=2, progress=False, distributed="fsdp")
        return Trainer(toy.ToyLM(), toy.ToyObjective(), list_source(toy.toy_examples(), toy.collate, batch_size=8),
                       cfg, out_dir=out)

    trainer(tmp_path).train()
    for name in ("model.safetensors", "trainer_state.json"):
        (tmp_path / name).unlink()
    step = tmp_path / "checkpoints" / "step-00000004"
    state = json.loads((step / "trainer_state.json").read_text())
    (step / "trainer_state.json").write_text(json.dumps({**state, "world_size": 2}))
    ckpt.write_manifest(step)  # as a 2-process run would have written it
    with pytest.raises(ConfigError, match="ran on 2 with 2 micro-batch.*--global-batch-size 16"):
        trainer(tmp_path).train(resume=True)


def test_materialize_initialises_weights_and_recomputes_fixed_buffers():
    from lmforge import Model, ModelConfig
    from lmforge.train.distributed import materialize, on_meta

    config = ModelConfig.from_preset("gpt-tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                                     max_positions=16, vocab_size=51, position_kind="sinusoidal", head="clm")
    with torch.device("meta"):
        model = Model(config)
    materialize(model, torch.device("cpu"), seed=0)
    assert not on_meta(model)
    eager = Model(config)
    assert torch.equal(model.body.embeddings.position.table, eager.body.embeddings.position.table)
    assert torch.equal(model.body.final_norm.weight, torch.ones(32))
    assert abs(float(model.body.embeddings.word.weight.std()) - config.initializer_range) < 0.005
    assert torch.isfinite(model(torch.randint(0, 51, (2, 8))).logits).all()
