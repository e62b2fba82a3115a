"""pretrain-vs-scratch: the quickstart's comparison as a curve. One tiny BERT is pre-trained (mlm+nsp) on the toy
corpus with a checkpoint every 10% of its steps; the checkpoints at 10%, 30% and 100% and a randomly initialized
model (0%) are each fine-tuned on the toy acceptability task (CoLA format) with several seeds, scored by test MCC.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from lmforge.lab.registry import Check, Log, Result

MODEL = {"preset": "bert-tiny", "hidden_dropout": 0.0, "attention_dropout": 0.0, "max_positions": 128}
FRACTIONS = (0.0, 0.1, 0.3, 1.0)


def _pretrain(out: Path, *, fast: bool) -> tuple[Path, int]:
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.tokenization.tokenizer import Tokenizer
    from lmforge.train.config import TrainConfig

    steps = 20 if fast else 3000
    run = out / "pretrain"
    state = run / "out" / "trainer_state.json"
    if state.is_file() and (run / "model.json").is_file() and json.loads((run / "model.json").read_text()) == MODEL \
            and json.loads(state.read_text()).get("step") == steps and (out / "data" / "cola").is_dir():
        return run / "out", steps  # a finished pre-training of this very setting (a re-run after a failed fine-tune)
    generate(out / "data", docs=300 if fast else 12000, examples=60 if fast else 1000, seed=0)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="wordpiece", vocab_size=400 if fast else 1000, show_progress=False)
    prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=0.02, progress=False, overwrite=True)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(MODEL) + "\n")
    train = TrainConfig(max_steps=steps, batch_size=8 if fast else 32, seq_len=64, lr=2e-3, warmup_ratio=0.06,
                        seed=0, log_every=max(1, steps // 20), save_every=steps // 10, keep=10, progress=False)
    pretrain(PretrainConfig(model=str(run / "model.json"), objective="mlm+nsp", data=str(out / "shards"),
                            out=str(run / "out"), val_batches=0, device="cpu", train=train))
    return run / "out", steps


def _model_at(pretrained: Path, step: int, dest: Path) -> Path:
    """A model directory of checkpoint ``step``: its weights and config with the run's tokenizer files."""
    ckpt = pretrained / "checkpoints" / f"step-{step:08d}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in pretrained.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt") and f.name not in ("trainer_state.json", "metrics.jsonl"):
            shutil.copy(f, dest / f.name)
    shutil.copy(ckpt / "config.json", dest / "config.json")
    shutil.copy(ckpt / "model.safetensors", dest / "model.safetensors")
    return dest


def _finetune(out: Path, model: Path, seed: int, run: Path, *, scratch: bool, fast: bool) -> dict[str, float]:
    from lmforge.lab.toy import finetune_toy

    s = finetune_toy(model, out / "data" / "cola", run, task="glue-cola", seed=seed, epochs=1 if fast else 10,
                     lr=3e-4, scratch=scratch)
    return {"test_mcc": s["test_mcc"], "test_accuracy": s["test_accuracy"]}


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread, run_jobs

    with one_thread():
        pretrained, steps = _pretrain(out, fast=fast)
        models = {}
        for fraction in FRACTIONS:
            step = max(int(round(fraction * steps)), 0)
            models[fraction] = (step, pretrained if fraction in (0.0, 1.0) else
                                _model_at(pretrained, step, out / "models" / f"step-{step}"))
        # the fine-tunes are independent: 2 one-thread processes run them side by side
        jobs = [(_finetune, (out, model, seed, out / "finetune" / f"{fraction:g}-seed{seed}"),
                 {"scratch": fraction == 0.0, "fast": fast})
                for fraction, (_, model) in models.items() for seed in range(seeds)]
        done = iter(run_jobs(jobs, workers=1 if fast else 2))
        rows = []
        for fraction, (step, _) in models.items():
            runs = [next(done) for _ in range(seeds)]
            mcc = [r["test_mcc"] for r in runs]
            acc = [r["test_accuracy"] for r in runs]
            rows.append({"pre-training": f"{fraction:.0%} ({step} steps)", "test MCC": float(np.mean(mcc)),
                         "MCC std": float(np.std(mcc)), "test accuracy": float(np.mean(acc)),
                         "accuracy std": float(np.std(acc)), "seeds": seeds})
            log(f"{rows[-1]['pre-training']}: test MCC {np.mean(mcc):.3f} +- {np.std(mcc):.3f}")
    scratch, full = rows[0], rows[-1]
    mccs = [r["test MCC"] for r in rows]
    checks = [Check("pre-trained beats from-scratch on fine-tuning", "yes (BERT table 1 vs no pre-training; GPT-1 "
                    "table 5: -14.8 points average without)", f"test MCC {full['test MCC']:.3f} vs {scratch['test MCC']:.3f}",
                    full["test MCC"] - scratch["test MCC"] > full["MCC std"] + scratch["MCC std"]),
              Check("more pre-training helps more", "yes (BERT figure 5 / RoBERTa table 4)",
                    " -> ".join(f"{m:.3f}" for m in mccs), bool(np.all(np.diff(mccs[1:]) >= -full["MCC std"])))]
    notes = [f"Tiny BERT (bert-tiny shape, no dropout), mlm+nsp, {steps} steps x 32 x 64 tokens, lr 2e-3; the 10% / "
             "30% rows fine-tune that run's checkpoints (the lr schedule was still warm there, unlike a short run).",
             "Fine-tuning: toy acceptability (CoLA format), 10 epochs, lr 3e-4, batch 16; 0% = the same architecture "
             "randomly initialized (--from-scratch)."]
    return Result(table=rows, checks=checks, notes=notes, data={"fractions": list(FRACTIONS), "rows": rows})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.data["rows"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar([100 * f for f in result.data["fractions"]], [r["test MCC"] for r in rows],
                yerr=[r["MCC std"] for r in rows], marker="o", capsize=3)
    ax.set_xlabel("% of pre-training done before fine-tuning")
    ax.set_ylabel("toy acceptability test MCC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
