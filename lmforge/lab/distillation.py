"""distillation: a distilled student keeps most of its teacher's fine-tuning score at a fraction of its size / time.

A 4-layer tiny BERT teacher is pre-trained (MLM) on the toy language; three students of it (through `lmforge
distill`'s library function) and one without a teacher, all trained for the same steps on the same shards:

  distilbert   2 of the teacher's 4 layers (initialised from teacher layers 0 and 3), the DistilBERT loss
  no teacher   the same 2-layer shape, random init, MLM only (the control: what the teacher adds)
  tinybert     2 layers of H64, TinyBERT's general distillation (hidden / attention / embedding losses)

Each is fine-tuned on the toy acceptability task (CoLA format) over the seeds, scored by test MCC; parameters,
size on disk and single-thread CPU latency (batch 1 and 32 x 64 tokens) beside. benchmarks/distillation.py is the
longer version (also TinyBERT's task distillation); this one is sized for 2 cores.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from lmforge.lab.registry import Check, Log, Result

SEQ, BATCH = 64, 32
TEACHER = {"preset": "bert-tiny", "num_layers": 4, "hidden_dropout": 0.0, "attention_dropout": 0.0,
           "max_positions": 128}
TINY = {"preset": "bert-tiny", "num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 256,
        "hidden_dropout": 0.0, "attention_dropout": 0.0, "max_positions": 128}


def _quiet(_: str) -> None:
    pass


def _train(steps: int, seed: int = 0) -> Any:
    from lmforge.train.config import TrainConfig

    return TrainConfig(max_steps=steps, batch_size=BATCH, seq_len=SEQ, lr=2e-3, warmup_ratio=0.06, seed=seed,
                       log_every=max(1, steps // 10), progress=False)


def _pretrain(out: Path, name: str, model: dict[str, Any], shards: Path, steps: int) -> Path:
    from lmforge.recipes.pretrain import PretrainConfig, pretrain

    spec = out / f"{name}.json"
    spec.write_text(json.dumps(model))
    pretrain(PretrainConfig(model=str(spec), objective="mlm", data=str(shards), out=str(out / "models" / name),
                            val_batches=0, device="cpu", overwrite=True, train=_train(steps)), log=_quiet)
    return out / "models" / name


def _distill(out: Path, name: str, teacher: Path, shards: Path, steps: int, **kw: Any) -> Path:
    from lmforge.recipes.distill import DistillConfig, distill

    distill(DistillConfig(teacher=str(teacher), data=str(shards), out=str(out / "models" / name), val_batches=0,
                          device="cpu", overwrite=True, train=_train(steps), **kw), log=_quiet)
    return out / "models" / name


def _finetune(out: Path, name: str, model: Path, cola: Path, seed: int, epochs: float) -> dict[str, Any]:
    from lmforge.recipes.finetune import FinetuneConfig, evaluate_dir, finetune

    where = out / "finetune" / f"{name}-seed{seed}"
    finetune(FinetuneConfig(model=str(model), task="glue-cola", data=str(cola), out=str(where), epochs=epochs,
                            lr=3e-4, batch_size=16, max_length=SEQ, seed=seed, device="cpu", progress=False,
                            overwrite=True), log=_quiet)
    test = evaluate_dir(str(where), task=None, data=str(cola), split="test", out=str(where / "test"), device="cpu",
                        log=_quiet, overwrite=True)
    return {"test_mcc": float(test["mcc"]), "dir": str(where)}


def latencies(dirs: dict[str, str], rounds: int) -> dict[str, dict[str, float]]:
    """Median forward ms of each classifier at batch 1 and 32 (eval, no grad), the models taking turns."""
    import torch

    from lmforge.models.model import Model

    models = {n: Model.from_pretrained(d).eval() for n, d in dirs.items()}
    g = torch.Generator().manual_seed(0)
    vocab = min(m.config.vocab_size for m in models.values())
    inputs = {b: torch.randint(5, vocab, (b, SEQ), generator=g) for b in (1, BATCH)}
    times: dict[str, dict[int, list[float]]] = {n: {1: [], BATCH: []} for n in models}
    with torch.inference_mode():
        for r in range(rounds + 2):
            for b, ids in inputs.items():
                for n in (list(models) if r % 2 == 0 else list(models)[::-1]):
                    t = time.perf_counter()
                    models[n](ids)
                    if r >= 2:  # the first two rounds warm up
                        times[n][b].append(time.perf_counter() - t)
    return {n: {"ms_b1": 1e3 * statistics.median(t[1]), "ms_b32": 1e3 * statistics.median(t[BATCH])}
            for n, t in times.items()}


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread, run_jobs
    from lmforge.lab.toy import toy_shards
    from lmforge.models.model import Model

    steps, s_steps, epochs = (20, 20, 1) if fast else (400, 300, 3)
    with one_thread():
        _, shards = toy_shards(out, docs=300 if fast else 4000, examples=60 if fast else 500,
                               vocab=400 if fast else 1000, val_fraction=0.02)
        cola = out / "data" / "cola"
        t0 = time.perf_counter()
        teacher = _pretrain(out, "teacher", TEACHER, shards, steps)
        log(f"teacher pre-trained ({time.perf_counter() - t0:.0f} s)")
        # independent runs go side by side in 2 one-thread processes: the two distillations, then the control
        # (it takes distilbert's shape) beside the first fine-tunes, then the control's fine-tunes
        workers = 1 if fast else 2
        (out / "tiny.json").write_text(json.dumps(TINY))
        distilbert, tinybert = run_jobs([
            (_distill, (out, "distilbert", teacher, shards, s_steps), {"recipe": "distilbert", "student_layers": 2,
                                                                      "layer_map": [0, 3]}),
            (_distill, (out, "tinybert", teacher, shards, s_steps), {"recipe": "tinybert",
                                                                    "student": str(out / "tiny.json")})],
            workers=workers)
        shape = {**json.loads((distilbert / "config.json").read_text()), "head": "mlm"}
        models = {"teacher": teacher, "distilbert": distilbert, "no teacher": out / "models" / "no-teacher",
                  "tinybert": tinybert}

        def tune(name: str) -> list[Any]:
            return [(_finetune, (out, name.replace(" ", "-"), models[name], cola, seed, epochs), {})
                    for seed in range(seeds)]

        first = ["teacher", "distilbert", "tinybert"]
        done = run_jobs([(_pretrain, (out, "no-teacher", shape, shards, s_steps), {}),
                         *[job for n in first for job in tune(n)]], workers=workers)[1:]
        log(f"students trained ({time.perf_counter() - t0:.0f} s)")
        runs = {n: done[i * seeds:(i + 1) * seeds] for i, n in enumerate(first)}
        runs["no teacher"] = run_jobs(tune("no teacher"), workers=workers)
        runs = {n: runs[n] for n in models}  # the table's order
        log(f"fine-tuned ({time.perf_counter() - t0:.0f} s)")
        dirs = {n: r[0]["dir"] for n, r in runs.items()}
        speed = latencies(dirs, 3 if fast else 20)
    rows = []
    for n, rs in runs.items():
        mcc = [r["test_mcc"] for r in rs]
        rows.append({"model": n, "params": Model.from_pretrained(dirs[n]).num_parameters(),
                     "MB on disk": (Path(dirs[n]) / "model.safetensors").stat().st_size / 1e6, **speed[n],
                     "test MCC": statistics.mean(mcc), "MCC std": statistics.pstdev(mcc), "seeds": seeds})
    t = rows[0]
    for r in rows:
        r["% params"] = 100 * r["params"] / t["params"]
        r["speed-up b32"] = t["ms_b32"] / r["ms_b32"]
        r["% of teacher MCC"] = 100 * r["test MCC"] / t["test MCC"] if t["test MCC"] > 0 else float("nan")
    by = {r["model"]: r for r in rows}
    d, nt = by["distilbert"], by["no teacher"]
    noise = max(d["MCC std"], nt["MCC std"], t["MCC std"])
    checks = [
        Check("student size", "DistilBERT 66M vs BERT-base 110M (60%)", f"distilbert {d['% params']:.0f}% of the "
              f"teacher's parameters, tinybert {by['tinybert']['% params']:.0f}%", None,
              note="our student halves the depth like DistilBERT; the embeddings weigh more at toy scale"),
        Check("student speed", "DistilBERT 60% faster (table 3: 410 s vs 668 s)",
              f"distilbert {d['speed-up b32']:.2f}x, tinybert {by['tinybert']['speed-up b32']:.2f}x at batch 32",
              None if fast else d["speed-up b32"] > 1.3),
        Check("score retained", "DistilBERT keeps 97% of BERT's GLUE score (table 1)",
              f"distilbert {d['% of teacher MCC']:.0f}% of the teacher's test MCC ({d['test MCC']:.3f} vs "
              f"{t['test MCC']:.3f})", None if fast or t["test MCC"] <= 0 else d["% of teacher MCC"] >= 90,
              note="the teacher's own MCC is noisy at toy scale: see the std"),
        Check("the teacher helps (vs the same student without one)", "yes (DistilBERT table 4 ablations: -2 to "
              "-3 points without the distillation losses / teacher init)",
              f"distilbert {d['test MCC']:.3f} vs no teacher {nt['test MCC']:.3f} (std {noise:.3f})",
              None if fast or abs(d["test MCC"] - nt["test MCC"]) <= noise else d["test MCC"] > nt["test MCC"],
              note="" if abs(d["test MCC"] - nt["test MCC"]) > noise else "within one std: undecided at this scale"),
    ]
    notes = [f"Teacher: bert-tiny body with 4 layers (H128), MLM {steps} steps x {BATCH} x {SEQ} tokens; each student "
             f"{s_steps} steps on the same shards; fine-tuning {epochs} epochs, lr 3e-4, batch 16, seeds 0..{seeds - 1}.",
             "Latency: median forward ms on one thread (eval, no grad), every model in turn; MB = model.safetensors "
             "of the fine-tuned classifier. benchmarks/distillation.py is the longer run (docs/distillation.md)."]
    return Result(table=rows, checks=checks, notes=notes, data={"rows": rows})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in result.data["rows"]:
        for ax, x in ((axes[0], r["params"] / 1e3), (axes[1], r["ms_b32"])):
            ax.errorbar(x, r["test MCC"], yerr=r["MCC std"], fmt="o", capsize=3)
            ax.annotate(r["model"], (x, r["test MCC"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes[0].set_xlabel("parameters (thousands)")
    axes[1].set_xlabel("CPU ms per batch of 32 x 64 tokens (1 thread)")
    for ax in axes:
        ax.set_ylabel("toy acceptability test MCC")
        ax.grid(True, alpha=0.3)
    fig.suptitle("distillation at toy scale: score vs size and speed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
