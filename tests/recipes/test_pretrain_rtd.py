"""`lmforge pretrain --objective rtd` (ELECTRA) end to end on tiny-shakespeare with a tiny model: the
discriminator beats the all-original baseline, OUT/generator shares the embeddings and exports as
ElectraForMaskedLM, SIGKILL + --resume is bitwise exact with the generator, two processes match one, the
paper's per-size defaults, bad input."""
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
import yaml
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.data.shards import prepare_shards
from lmforge.train.logging import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import tokfixtures  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ELECTRA_TINY = ("preset: electra-small\nnum_layers: 2\nhidden_size: 64\nembedding_size: 32\nnum_heads: 2\n"
                "intermediate_size: 256\nmax_positions: 128\nhidden_dropout: 0.0\nattention_dropout: 0.0\n")
GPT_TINY = "preset: gpt-tiny\nnum_layers: 1\nhidden_size: 32\nnum_heads: 2\nmax_positions: 64\n"


@pytest.fixture(scope="module")
def files(refdata, tmp_path_factory) -> dict[str, Path]:
    """Toy-language shards (a 600-id WordPiece vocabulary: a tiny model learns in seconds), GPT-2 shards."""
    from lmforge.data.toyland import generate
    from lmforge.tokenization import Tokenizer

    root = tmp_path_factory.mktemp("rtd")
    generate(root / "toy", docs=400, examples=20, seed=0)
    corpus = root / "toy" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="wordpiece", vocab_size=600, show_progress=False)
    prepare_shards([corpus], tokenizer=tok, out=root / "shards", val_fraction=0.05, progress=False)
    (root / "small.txt").write_text("\n".join(["To be, or not to be, that is the question."] * 200) + "\n")
    prepare_shards([root / "small.txt"], tokenizer=tokfixtures.gpt2_tokenizer(refdata), out=root / "gpt2-shards",
                   val_fraction=0.0, progress=False)
    (root / "electra.yaml").write_text(ELECTRA_TINY)
    (root / "gpt.yaml").write_text(GPT_TINY)
    return {"shards": root / "shards", "gpt2_shards": root / "gpt2-shards", "model": root / "electra.yaml",
            "gpt": root / "gpt.yaml"}


def _args(files, out: Path, *extra: str, objective: str = "electra", size: str | None = "0.25") -> list[str]:
    return ["pretrain", "--model", str(files["model"]), "--objective", objective, "--data", str(files["shards"]),
            "--out", str(out), "--batch-size", "8", "--seq-len", "32", "--lr", "3e-3", "--warmup", "3",
            "--log-every", "1", "--val-batches", "3", "--no-progress",
            *(["--generator-size", size] if size else []), *extra]


def test_rtd_learns_saves_the_generator_and_exports_both(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(files, out, "--max-steps", "100", "--eval-every", "50", "--batch-size", "32", "--seq-len",
                      "64", "--lr", "2e-3", "--log-every", "5", "--val-batches", "4")) == 0
    text = capsys.readouterr().out
    assert "rtd: generator L2/H16/A1" in text and "the generator in" in text
    train = [r for r in read_metrics(out) if r["split"] == "train"]
    val = [r for r in read_metrics(out) if r["split"] == "val"]
    assert {"mlm_loss", "mlm_accuracy", "disc_loss", "disc_accuracy", "disc_recall", "replaced_fraction"} <= train[0].keys()
    last = val[-1]
    # the discriminator beats "nothing was replaced", whose accuracy is 1 - replaced_fraction
    assert last["disc_accuracy"] > 1 - last["replaced_fraction"] + 0.005, last
    assert last["disc_recall"] > 0.05 and last["disc_precision"] > 0.5
    assert sum(r["loss"] for r in train[-5:]) < sum(r["loss"] for r in train[:5])

    from lmforge import Model

    disc, gen = Model.from_pretrained(out), Model.from_pretrained(out / "generator")
    assert disc.config.head == "rtd" and gen.config.head == "mlm" and gen.config.hidden_size == 16
    for name in ("word", "position", "segment", "norm"):  # saved from the shared modules: equal tensors
        a, b = getattr(disc.body.embeddings, name), getattr(gen.body.embeddings, name)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), name
    assert (out / "generator" / "tokenizer.json").is_file()
    assert yaml.safe_load((out / "pretrain_config.yaml").read_text())["objective"] == "rtd"

    # `lmforge export` writes the discriminator and, beside it, the generator
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "hf")]) == 0
    assert "ElectraForMaskedLM (the rtd run's generator)" in capsys.readouterr().out
    arch = lambda d: json.loads((d / "config.json").read_text())["architectures"]  # noqa: E731
    assert arch(tmp_path / "hf") == ["ElectraForPreTraining"] and arch(tmp_path / "hf" / "generator") == [
        "ElectraForMaskedLM"]

    # resuming it as mlm is refused, and so is a checkpoint of another objective's networks
    assert main(_args(files, out, "--max-steps", "41", "--resume", objective="mlm", size=None)) == 2
    err = capsys.readouterr().err
    assert "pre-trained with --objective rtd" in err and "generator" in err


def test_the_papers_defaults_for_electra_presets(files, tmp_path, capsys):
    base = ["pretrain", "--objective", "electra", "--data", str(files["shards"]), "--out", str(tmp_path / "x"),
            "--dry-run"]
    assert main([*base, "--model", "electra-small"]) == 0
    small = yaml.safe_load(capsys.readouterr().out)
    assert (small["objective"], small["lr"], small["warmup_steps"], small["global_batch_size"], small["adam_eps"],
            small["generator_size"], small["mask_prob"], small["seq_len"]) == ("rtd", 5e-4, 10000, 128, 1e-6, 0.25,
                                                                                0.15, 128)
    assert main([*base, "--model", "electra-base", "--lr", "1e-3", "--warmup", "0.1"]) == 0
    b = yaml.safe_load(capsys.readouterr().out)  # flags win; the rest is the paper's base
    assert (b["lr"], b["warmup_ratio"], b["warmup_steps"], b["global_batch_size"], b["seq_len"]) == (1e-3, 0.1, 0, 256,
                                                                                                     512)
    assert abs(b["generator_size"] - 1 / 3) < 1e-9
    assert main([*base, "--model", "electra-large", "--batch-size", "48"]) == 0
    large = yaml.safe_load(capsys.readouterr().out)  # 2048 is not a multiple of 48: the batch is left alone
    assert large["mask_prob"] == 0.25 and large["global_batch_size"] is None and large["batch_size"] == 48
    assert main([*base, "--model", str(files["model"])]) == 0  # not a preset: TrainConfig's defaults
    other = yaml.safe_load(capsys.readouterr().out)
    assert other["lr"] == 1e-4 and other["warmup_steps"] == 0 and other["generator_size"] is None


def test_bad_input(files, tmp_path, capsys):
    def fails(args: list[str], *needles: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err

    run = lambda *extra, **kw: _args(files, tmp_path / "bad", "--max-steps", "2", *extra, **kw)  # noqa: E731
    decoder = run()
    decoder[decoder.index("--model") + 1] = str(files["gpt"])
    fails(decoder, "rtd trains a bidirectional encoder", "decoder")
    fails(_args(files, tmp_path / "bad", size="0"), "--generator-size must be > 0")
    fails(_args(files, tmp_path / "bad", size=str(129 / 64)), "hidden size of 129", "hidden 128")
    no_mask = run()
    no_mask[no_mask.index("--data") + 1] = str(files["gpt2_shards"])
    fails(no_mask, "needs a mask token")
    fails(run(objective="mlm"), "apply to --objective rtd")
    fails(run("--objective", "eletcra"), "unknown objective", "electra")
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cli(files, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", *_args(files, out, *extra)]


@pytest.mark.slow
def test_sigkill_resume_is_bitwise_exact_with_the_generator(files, tmp_path):
    common = ("--max-steps", "12", "--save-every", "2", "--keep", "2", "--val-batches", "2")
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(_cli(files, ref, *common), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(_cli(files, run, *common), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step-00000004").exists():
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists(), "the run finished before it was killed"
    assert (run / "checkpoints" / "step-00000004" / "extra-generator.safetensors").is_file()
    res = subprocess.run(_cli(files, run, *common, "--resume"), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    for rel in ("model.safetensors", "generator/model.safetensors"):
        assert (ref / rel).read_bytes() == (run / rel).read_bytes(), rel
    assert [r["loss"] for r in read_metrics(run)] == [r["loss"] for r in read_metrics(ref)]
    assert [r.get("disc_accuracy") for r in read_metrics(run)] == [r.get("disc_accuracy") for r in read_metrics(ref)]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(files, tmp_path):
    """2 processes x batch 4 == 1 process with 2 micro-batches of 4 (dropout off): the samples are the
    examples' own, and the generator's gradients are averaged over the ranks as DDP averages the model's."""
    common = ("--max-steps", "4", "--global-batch-size", "8", "--batch-size", "4", "--val-batches", "0")
    args = lambda out: _args(files, out, *common)  # noqa: E731
    r1 = subprocess.run([sys.executable, "-m", "lmforge", *args(tmp_path / "one")], env=_env(), capture_output=True,
                        text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "lmforge", *args(tmp_path / "two")], env=_env(), capture_output=True, text=True,
                        timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    l1 = torch.tensor([r["loss"] for r in read_metrics(tmp_path / "one")])
    l2 = torch.tensor([r["loss"] for r in read_metrics(tmp_path / "two")])
    assert len(l1) == 4 and torch.allclose(l1, l2, rtol=1e-4, atol=1e-4), (l1, l2)
    g1 = load_file(str(tmp_path / "one" / "generator" / "model.safetensors"))
    g2 = load_file(str(tmp_path / "two" / "generator" / "model.safetensors"))
    assert all(torch.allclose(g1[k], g2[k], atol=1e-5) for k in g1)
