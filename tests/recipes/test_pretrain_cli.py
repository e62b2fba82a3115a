"""`lmforge pretrain` end to end on tiny-shakespeare with tiny models: every objective learns, outputs exist,
the result loads with Model.from_pretrained, SIGKILL + --resume is bitwise exact, torchrun works, bad input."""
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

from lmforge.cli import main
from lmforge.data.shards import prepare_shards
from lmforge.train.logging import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import tokfixtures  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BERT_TINY = "preset: bert-tiny\nnum_layers: 2\nhidden_size: 64\nnum_heads: 2\nintermediate_size: 256\nmax_positions: 128\n"
GPT_TINY = "preset: gpt-tiny\nnum_layers: 2\nhidden_size: 64\nnum_heads: 2\nintermediate_size: 256\nmax_positions: 128\n"


@pytest.fixture(scope="module")
def shards(refdata, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    out = {}
    for name, tok in (("bert", tokfixtures.bert_tokenizer(refdata)), ("gpt2", tokfixtures.gpt2_tokenizer(refdata))):
        out[name] = root / f"shards-{name}"
        prepare_shards([refdata / "text" / "tinyshakespeare.txt"], tokenizer=tok, out=out[name], doc_mode="blank",
                       val_fraction=0.01, progress=False)
    (root / "bert-tiny.yaml").write_text(BERT_TINY)
    (root / "gpt-tiny.yaml").write_text(GPT_TINY)
    out["bert_model"], out["gpt_model"] = root / "bert-tiny.yaml", root / "gpt-tiny.yaml"
    return out


def _args(shards, objective: str, out: Path, *extra: str) -> list[str]:
    model = shards["gpt_model"] if objective == "clm" else shards["bert_model"]
    data = shards["gpt2"] if objective == "clm" else shards["bert"]
    return ["pretrain", "--model", str(model), "--objective", objective, "--data", str(data), "--out", str(out),
            "--batch-size", "8", "--seq-len", "32", "--lr", "3e-3", "--warmup", "3", "--log-every", "1",
            "--val-batches", "2", "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["clm", "mlm", "mlm+nsp", "mlm+sop"])
def test_every_objective_learns(shards, tmp_path, objective, capsys):
    out = tmp_path / "run"
    assert main(_args(shards, objective, out, "--max-steps", "30", "--eval-every", "15")) == 0
    train = [r for r in read_metrics(out) if r["split"] == "train"]
    val = [r for r in read_metrics(out) if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert {"step", "loss", "lr", "tokens_per_s"} <= train[0].keys()
    first, last = sum(r["loss"] for r in train[:5]) / 5, sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert [r["step"] for r in val] == [15, 30] and val[1]["loss"] < val[0]["loss"]
    assert "perplexity" in val[0]
    if objective != "clm":
        assert 0 <= val[-1]["mlm_accuracy"] <= 1
    if objective in ("mlm+nsp", "mlm+sop"):
        assert f"{objective[4:]}_accuracy" in val[-1]
    assert (out / "loss.png").stat().st_size > 1000
    from lmforge import Model, Tokenizer

    model = Model.from_pretrained(out)
    saved = load_file(str(out / "model.safetensors"))
    assert any(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)
    assert len(Tokenizer.from_pretrained(out)) == model.config.vocab_size
    assert "done: 30 steps" in capsys.readouterr().out


def test_preset_takes_the_tokenizer_vocab_and_bad_input(shards, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["pretrain", "--model", "gpt-tiny", "--objective", "clm", "--data", str(shards["bert"]),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--seq-len", "32", "--no-progress",
                 "--val-batches", "0"]) == 0
    text = capsys.readouterr().out
    assert "preset gpt-tiny has a vocabulary of 50,257; using the data's tokenizer's 30,522 instead" in text
    # seq-len above max positions
    assert main(_args(shards, "clm", tmp_path / "q", "--max-steps", "2", "--seq-len", "512")) == 2
    assert "max_positions 128" in capsys.readouterr().err
    # batch larger than the data: the validation split has ~2k tokens, so use a huge batch on train
    assert main(_args(shards, "clm", tmp_path / "r", "--max-steps", "2", "--batch-size", "100000")) == 2
    assert "fewer than one global batch" in capsys.readouterr().err
    # a device torch does not know (before anything is loaded); a GPU on a machine without one
    assert main(_args(shards, "clm", tmp_path / "d", "--max-steps", "2", "--device", "gpu0")) == 2
    assert "device 'gpu0' is not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(_args(shards, "clm", tmp_path / "d", "--max-steps", "2", "--device", "cuda")) == 2
        assert "no CUDA device" in capsys.readouterr().err
    # not a shard dir; a shard dir whose tokenizer copy was swapped (hash mismatch)
    (tmp_path / "empty").mkdir()
    assert main(["pretrain", "--model", str(shards["gpt_model"]), "--objective", "clm", "--data",
                 str(tmp_path / "empty"), "--out", str(tmp_path / "s"), "--max-steps", "2"]) == 2
    assert "not a shard directory" in capsys.readouterr().err
    assert main(_args(shards, "mlm", tmp_path / "t", "--max-steps", "2", "--tokenizer",
                      str(shards["gpt2"] / "tokenizer"))) == 2
    assert "different tokenizer" in capsys.readouterr().err
    # NaN loss: a learning rate that blows up; the last good checkpoint is named
    code = main(_args(shards, "clm", tmp_path / "n", "--max-steps", "30", "--lr", "1e6", "--warmup", "10",
                      "--max-grad-norm", "0", "--save-every", "1"))  # step 1 has lr 0; then it explodes
    err = capsys.readouterr().err
    assert code == 2 and "the loss became" in err and "the last good checkpoint is" in err, err
    bad_step = int(err.split(" at step ")[1].split(";")[0])
    assert f"step-{bad_step - 1:08d}" in err and not (tmp_path / "n" / "model.safetensors").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_resume_is_bitwise_exact_through_the_cli(shards, tmp_path):
    base = [sys.executable, "-m", "lmforge"] + _args(shards, "mlm+nsp", tmp_path / "x", "--max-steps", "12",
                                                     "--save-every", "2", "--keep", "2")
    ref = [*base[:base.index("--out") + 1], str(tmp_path / "ref"), *base[base.index("--out") + 2:]]
    run = [*base[:base.index("--out") + 1], str(tmp_path / "run"), *base[base.index("--out") + 2:]]
    assert subprocess.run(ref, env=_env(), capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(run, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "checkpoints" / "step-00000004").exists():
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "model.safetensors").exists()
    res = subprocess.run(run + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_losses = [r["loss"] for r in read_metrics(tmp_path / "ref")]
    assert [r["loss"] for r in read_metrics(tmp_path / "run")] == ref_losses


@pytest.mark.slow
def test_torchrun_two_processes_match_one(shards, tmp_path):
    """2 processes x batch 4 under torchrun == 1 process with 2 micro-batches of 4 (dropout off: ranks draw
    their own dropout masks)."""
    model = tmp_path / "gpt-nodrop.yaml"
    model.write_text(GPT_TINY + "hidden_dropout: 0.0\nattention_dropout: 0.0\n")
    common = _args(shards, "clm", tmp_path / "x", "--max-steps", "3", "--global-batch-size", "8", "--batch-size",
                   "4", "--val-batches", "0")
    common[common.index("--model") + 1] = str(model)
    one = [*common[:common.index("--out") + 1], str(tmp_path / "one"), *common[common.index("--out") + 2:]]
    two = [*common[:common.index("--out") + 1], str(tmp_path / "two"), *common[common.index("--out") + 2:]]
    r1 = subprocess.run([sys.executable, "-m", "lmforge", *one], env=_env(), capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "lmforge", *two], env=_env(), capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    l1 = torch.tensor([r["loss"] for r in read_metrics(tmp_path / "one")])
    l2 = torch.tensor([r["loss"] for r in read_metrics(tmp_path / "two")])
    assert len(l1) == 3 and torch.allclose(l1, l2, rtol=1e-5, atol=1e-5), (l1, l2)
    assert json.loads((tmp_path / "two" / "trainer_state.json").read_text())["world_size"] == 2


def test_grad_checkpointing_gives_the_same_training(shards, tmp_path):
    """--grad-checkpointing recomputes activations: same losses as without (torch.compile is tested on the
    loop with a small model in test_loop.py; compiling this model on 2 busy cores takes minutes)."""
    model = tmp_path / "bert-nodrop.yaml"
    model.write_text(BERT_TINY + "hidden_dropout: 0.0\nattention_dropout: 0.0\n")
    runs = []
    for name, extra in (("plain", []), ("ckpt", ["--grad-checkpointing"])):
        args = _args(shards, "mlm", tmp_path / name, "--max-steps", "3", "--val-batches", "0", *extra)
        args[args.index("--model") + 1] = str(model)
        assert main(args) == 0
        runs.append([r["loss"] for r in read_metrics(tmp_path / name)])
    assert torch.allclose(torch.tensor(runs[0]), torch.tensor(runs[1]), atol=1e-5)


# ----------------------------------------------------------------------------- on the toy shards (no refdata)

def _toy(toy_shards, out: Path, *extra: str, objective: str = "clm", model: str = "gpt",
         data: str = "wordpiece") -> list[str]:
    return ["pretrain", "--model", str(toy_shards[model]), "--objective", objective, "--data", str(toy_shards[data]),
            "--out", str(out), "--batch-size", "4", "--seq-len", "32", "--log-every", "1", "--val-batches", "1",
            "--no-progress", *extra]


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_continuing_from_a_model_dir_needs_shards_of_its_own_tokenizer(toy_shards, tmp_path, capsys):
    """A WordPiece model continued on byte-level BPE shards of the same size ran to the end before, and its
    output directory then held the BPE tokenizer."""
    import shutil

    from lmforge import Tokenizer
    from lmforge.data.shards import tokenizer_hash

    base = tmp_path / "base"
    assert main(_toy(toy_shards, base, "--max-steps", "2")) == 0  # a model directory with its WordPiece tokenizer
    capsys.readouterr()
    wordpiece, bpe = (tokenizer_hash(Tokenizer.from_pretrained(toy_shards[f"tok-{kind}"]))[:12]
                      for kind in ("wordpiece", "bpe"))

    def cont(out: Path, data: str, model: Path = base) -> int:
        args = _toy(toy_shards, out, "--max-steps", "1", data=data)
        args[args.index("--model") + 1] = str(model)
        return main(args)

    assert cont(tmp_path / "bad", "bpe") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"the model's is a wordpiece tokenizer of 300 tokens (hash {wordpiece})" in err
    assert f"the shards' a bpe tokenizer of 300 tokens (hash {bpe})" in err
    assert f"`lmforge prepare --tokenizer {base} --out NEW_SHARDS FILES...`" in err
    assert not (tmp_path / "bad").exists()
    # the shards of its own tokenizer: continues, and the output keeps that tokenizer
    assert cont(tmp_path / "good", "wordpiece") == 0
    same = tokenizer_hash(Tokenizer.from_pretrained(base))
    assert tokenizer_hash(Tokenizer.from_pretrained(tmp_path / "good")) == same
    # the same tokenizer kept as vocab.txt only (another hash, the same ids): accepted
    shutil.copytree(base, tmp_path / "vocab-only")
    (tmp_path / "vocab-only" / "tokenizer.json").unlink()
    assert cont(tmp_path / "good2", "wordpiece", tmp_path / "vocab-only") == 0, capsys.readouterr().err


def test_resume_rules_and_the_output_directory_through_the_cli(toy_shards, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = _toy(toy_shards, out, "--max-steps", "4", "--save-every", "2", objective="mlm", model="bert")
    previous = os.umask(0o022)
    try:
        assert main(args) == 0
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()} == {"0o644"}  # safetensors too
    before = _snapshot(out)
    capsys.readouterr()
    # a finished run: says so, exit 0, no file touched
    assert main([*args, "--resume"]) == 0
    assert f"{out} holds a finished run (4 of 4 steps); nothing to do" in capsys.readouterr().out
    assert _snapshot(out) == before
    # the progress bar is no setting to compare (the CLI turns it off when the output is not a terminal)
    from lmforge.commands import pretrain as command

    monkeypatch.setattr(command, "interactive", lambda: True)
    assert main([*[a for a in args if a != "--no-progress"], "--resume"]) == 0, capsys.readouterr().err
    assert "nothing to do" in capsys.readouterr().out and _snapshot(out) == before
    # without --resume: one line naming --resume and --overwrite
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    # other settings: refused with every difference (saved -> now); --log-every may change freely
    changed = ["--lr", "1e-3", "--batch-size", "8", "--masking", "static", "--log-every", "2"]
    assert main([*args, "--resume", *changed]) == 2
    err = capsys.readouterr().err
    for part in ("4 setting(s) differ", "lr 0.0001 -> 0.001", "batch_size 4 -> 8", "masking 'dynamic' -> 'static'",
                 "dupe_factor None -> 10", "--allow-changes"):  # static masks come in dupe_factor copies
        assert part in err, err
    assert main([*args, "--resume", "--masking", "dynamic"]) == 0  # mlm's default: no change
    assert _snapshot(out) == before
    # a longer run continues from the checkpoint kept at the end
    assert main([*args, "--resume", "--max-steps", "6"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 6
    assert [r["step"] for r in read_metrics(out) if r["split"] == "train"] == list(range(1, 7))
    # --overwrite starts over: the old run's checkpoints and metrics go, other files stay
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--overwrite", "--max-steps", "2"]) == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    assert [r["step"] for r in read_metrics(out) if r["split"] == "train"] == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(toy_shards, tmp_path, capsys):
    import shlex

    args = _toy(toy_shards, tmp_path / "run", "--max-steps", "60", objective="mlm", model="bert")
    ref = [*args[:args.index("--out") + 1], str(tmp_path / "ref"), *args[args.index("--out") + 2:]]
    assert main(ref) == 0
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.stat().st_size):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # after step 1, at some point of a later step
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"the run was not interrupted (too fast?): {out[-1000:]} {err[-1000:]}"
    step = int(err.split("interrupted after step ")[1].split(" ")[0])
    checkpoint = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
    assert f"interrupted after step {step} of 60; checkpoint written: {checkpoint}" in err
    assert (checkpoint / "trainer_state.json").is_file() and not (tmp_path / "run" / "model.safetensors").exists()
    command = err.split("to continue, run: ")[1].strip()
    assert command == "python -m lmforge " + shlex.join([*args, "--resume"])
    assert main(shlex.split(command)[3:]) == 0  # the printed command, run here (a process start costs seconds)
    assert f"resumed from {checkpoint} at step {step}" in capsys.readouterr().out
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("ref", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_metrics(tmp_path / "run")] == [r["loss"] for r in read_metrics(tmp_path / "ref")]


def test_data_that_is_not_a_shard_dir_says_run_prepare_never_over_the_text(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    base = ["pretrain", "--model", "bert-tiny", "--out", str(tmp_path / "run"), "--data"]
    assert main([*base, str(corpus)]) == 2
    err = capsys.readouterr().err
    assert err == (f"lmforge pretrain: error: --data {corpus} is a text file, not a shard directory; run `lmforge "
                   f"prepare --tokenizer TOK --out SHARDS {corpus}` and pass --data SHARDS\n")
    assert main([*base, str(tmp_path)]) == 2  # a folder of text files
    assert f"{tmp_path} is not a shard directory (no meta.json; it holds corpus.txt); run `lmforge prepare " \
           f"--tokenizer TOK --out SHARDS {tmp_path}/*.txt`" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert "shard directory not found" in err and "--out SHARDS FILES..." in err and "--out " + str(tmp_path) not in err
    assert corpus.read_text() == "some text\n" and not (tmp_path / "run").exists()


def test_training_settings_errors_name_the_flag_on_the_command_line(tmp_path, capsys):
    from lmforge.errors import ConfigError
    from lmforge.train import TrainConfig

    base = ["pretrain", "--model", "bert-tiny", "--data", "d", "--out", "o", "--dry-run"]
    for flags, said in ((["--max-steps", "-5"], "--max-steps must be positive, got -5"),
                        (["--tokens", "-2e6"], "--tokens must be positive, got -2000000"),
                        (["--batch-size", "0"], "--batch-size must be at least 1, got 0")):
        assert main([*base, *flags]) == 2
        assert capsys.readouterr().err == f"lmforge pretrain: error: {said}\n"
    with pytest.raises(ConfigError, match=r"TrainConfig.batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0)  # Python names the field
