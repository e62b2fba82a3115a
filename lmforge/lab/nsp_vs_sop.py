"""nsp-vs-sop: ALBERT table 5 on the toy language. The same tiny BERT is pre-trained with mlm+nsp and with mlm+sop
(same steps, batch, lr, seed; each objective's own default masking), then each model's sentence-pair head is
scored on BOTH tasks' validation pairs. NSP's negatives come from another document (a topic signal: the toy
stories' characters change), SOP's are the same two segments swapped (only an order signal), so ALBERT's
finding is that NSP training does not teach SOP while SOP training transfers to NSP.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.lab.registry import Check, Log, Result

# ALBERT table 5 (ALBERT-base, intrinsic accuracy %): trained with -> (MLM, NSP, SOP)
TABLE5 = {"none": (54.9, 52.4, 53.3), "mlm+nsp": (54.5, 90.5, 52.0), "mlm+sop": (54.0, 78.9, 86.5)}
MODEL = {"preset": "bert-tiny", "hidden_dropout": 0.0, "attention_dropout": 0.0, "max_positions": 128}


def _data(out: Path, fast: bool) -> tuple[Any, Path]:
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.tokenization.tokenizer import Tokenizer

    generate(out / "data", docs=300 if fast else 12000, examples=10, seed=0)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="wordpiece", vocab_size=400 if fast else 1000, show_progress=False)
    prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=0.05, progress=False, overwrite=True)
    return tok, out / "shards"


def _pretrain(out: Path, shards: Path, objective: str, *, steps: int, batch: int, seed: int) -> Path:
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train.config import TrainConfig

    run = out / f"{objective.replace('+', '-')}-seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(MODEL) + "\n")
    train = TrainConfig(max_steps=steps, batch_size=batch, seq_len=64, lr=2e-3, warmup_ratio=0.06, seed=seed,
                        log_every=max(1, steps // 10), save_every=steps, keep=1, progress=False)
    pretrain(PretrainConfig(model=str(run / "model.json"), objective=objective, data=str(shards),
                            out=str(run / "out"), val_batches=0, device="cpu", train=train))
    return run / "out"


def score(model_dir: Path, tok: Any, shards: Path, *, batches: int) -> dict[str, float]:
    """MLM accuracy and the pair head's accuracy on NSP pairs and on SOP pairs of the validation split."""
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.loop import objective_evaluator

    model, _ = load_model_and_tokenizer(model_dir)
    model.eval()
    val = ShardDataset(shards, "val")
    out = {}
    for name in ("mlm+nsp", "mlm+sop"):
        objective = build_objective(name, tokenizer=tok, seq_len=64)
        source = BatchSource(objective, val, batch_size=32, seed=0, shuffle=False, drop_last=False)
        r = objective_evaluator(objective, source, max_batches=batches)(model)
        out[name.split("+")[1]] = r[f"{name.split('+')[1]}_accuracy"]
        out.setdefault("mlm", r["mlm_accuracy"])
    return out


def _arm(out: Path, shards: Path, objective: str, *, steps: int, batch: int, seed: int, batches: int
         ) -> dict[str, float]:
    """Pre-train one objective and score its pair head on both tasks (one arm; runs in a worker process)."""
    import torch

    from lmforge.data.shards import ShardDataset

    model_dir = _pretrain(out / "runs", shards, objective, steps=steps, batch=batch, seed=seed)
    with torch.no_grad():
        return score(model_dir, ShardDataset(shards, "train").load_tokenizer(), shards, batches=batches)


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread, run_jobs

    _, shards = _data(out, fast)
    steps, batch, batches = (8, 8, 2) if fast else (1500, 32, 20)
    scores: dict[str, list[dict[str, float]]] = {"mlm+nsp": [], "mlm+sop": []}
    arms = [(objective, seed) for seed in range(seeds) for objective in scores]
    with one_thread():  # the two objectives train side by side, one process each (the same machine load for both)
        done = run_jobs([(_arm, (out, shards, objective), {"steps": steps, "batch": batch, "seed": seed,
                                                           "batches": batches}) for objective, seed in arms],
                        workers=1 if fast else 2)
    for (objective, seed), r in zip(arms, done):
        scores[objective].append(r)
        log(f"{objective} seed {seed}: {r}")
    rows, mean = [], {}
    for objective, runs in scores.items():
        mean[objective] = {k: float(np.mean([r[k] for r in runs])) for k in ("mlm", "nsp", "sop")}
        std = {k: float(np.std([r[k] for r in runs])) for k in ("mlm", "nsp", "sop")}
        paper = TABLE5[objective]
        rows.append({"trained with": objective, "MLM acc": mean[objective]["mlm"], "NSP acc": mean[objective]["nsp"],
                     "NSP std": std["nsp"], "SOP acc": mean[objective]["sop"], "SOP std": std["sop"],
                     "paper MLM / NSP / SOP": " / ".join(f"{x:g}" for x in paper)})
    nsp, sop = mean["mlm+nsp"], mean["mlm+sop"]
    checks = [
        Check("NSP-trained model on SOP", "52.0% (chance)", f"{nsp['sop']:.1%}", abs(nsp["sop"] - 0.5) < 0.08),
        Check("SOP-trained model on NSP", "78.9% (well above chance)", f"{sop['nsp']:.1%}", sop["nsp"] > 0.6),
        Check("SOP-trained model on SOP", "86.5%", f"{sop['sop']:.1%}", sop["sop"] > nsp["sop"] + 0.05),
        Check("NSP-trained model on NSP", "90.5%", f"{nsp['nsp']:.1%}", nsp["nsp"] > 0.6),
    ]
    notes = [f"Tiny BERT ({MODEL['preset']} shape, no dropout), {steps} steps x {batch} x 64 tokens per objective, "
             f"lr 2e-3, {seeds} seed(s); accuracies over {batches} validation batches of 32 pairs.",
             "'held' thresholds: chance = within 8 points of 50%; 'well above chance' = over 60%; SOP on SOP must beat "
             "NSP on SOP by 5 points.",
             "ALBERT's 'none' row (MLM only) is not run here: an MLM-only model has no sentence-pair head.",
             "MLM accuracy is measured with mlm+nsp's BERT token masking for both models; the mlm+sop model was "
             "trained on ALBERT's n-gram whole-word masking, so that column is not like for like."]
    return Result(table=rows, checks=checks, notes=notes, data={"mean": mean})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(2)
    for i, (objective, m) in enumerate(result.data["mean"].items()):
        ax.bar(x + 0.2 * i - 0.3, [100 * m["nsp"], 100 * m["sop"]], 0.2, label=f"ours, trained {objective}")
        ax.bar(x + 0.2 * i + 0.1, TABLE5[objective][1:], 0.2, alpha=0.4, label=f"ALBERT table 5, {objective}")
    ax.axhline(50, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(x, ["evaluated on NSP", "evaluated on SOP"])
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
