"""The distillation papers' claim at toy scale: a teacher BERT pre-trained on the built-in toy language and
fine-tuned on its acceptability task (toy CoLA), and students from each recipe, against a same-size student
pre-trained without a teacher and a TinyBERT student fine-tuned without task distillation.

    python benchmarks/distillation.py [--out /tmp/lmforge-distill] [--steps 1500] [--distill-steps 800]
                                      [--seeds 0 1] [--png docs/distillation.png]

Rows (every student sees the same shards, the same fine-tuning data, schedule and seeds):
  teacher              bert-tiny body with 4 layers (H128, A2), MLM for --steps, then fine-tuned
  distilbert           6 -> 2 ... here 4 -> 2 layers from teacher layers [0, 3] (no segments, no pooler),
                       `lmforge distill --recipe distilbert` for --distill-steps, then fine-tuned
  no teacher           the same 2-layer DistilBERT shape, random init, MLM only for --distill-steps, fine-tuned
  tinybert (+task)     2 layers of H64 (A2, the teacher's heads), general distillation for --distill-steps,
                       then task distillation (stage 1: 5 epochs intermediate, stage 2: 10 epochs soft CE)
  tinybert (direct)    the same general student fine-tuned directly (no task distillation)

Columns: parameters (with the classifier), model.safetensors size, CPU latency of the classifier at batch 1
and batch 32 x 64 tokens (median, one thread, every model in turn in the same process), test MCC (mean over
fine-tuning seeds; dev picks each run's epoch), and the MCC as a % of the teacher's. Intermediate results are
kept in --out, so a second run only redoes what is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEQ, BATCH = 64, 32
TEACHER = {"preset": "bert-tiny", "num_layers": 4, "hidden_dropout": 0.0, "attention_dropout": 0.0}
TINY_STUDENT = {"preset": "bert-tiny", "num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 256,
                "hidden_dropout": 0.0, "attention_dropout": 0.0}


def log(message: str) -> None:
    print(message, flush=True)


def quiet(_: str) -> None:
    pass


def data(out: Path) -> tuple[Path, Path]:
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.tokenization import Tokenizer

    if not (out / "shards" / "meta.json").is_file():
        generate(out / "toy", docs=6000, examples=1000, seed=0)
        tok = Tokenizer.train([str(out / "toy" / "corpus" / "train.txt")], kind="wordpiece", vocab_size=1000,
                              show_progress=False)
        tok.save_pretrained(out / "tokenizer")
        prepare_shards([out / "toy" / "corpus" / "train.txt"], tokenizer=tok, out=out / "shards", val_fraction=0.02,
                       progress=False)
    return out / "shards", out / "toy" / "cola"


def train_config(steps: int, lr: float) -> object:
    from lmforge.train import TrainConfig

    return TrainConfig(max_steps=steps, batch_size=BATCH, seq_len=SEQ, lr=lr, warmup_ratio=0.06, seed=0,
                       log_every=max(1, steps // 20), progress=False)


def pretrain_model(out: Path, name: str, model: dict, shards: Path, steps: int, lr: float) -> Path:
    from lmforge.recipes.pretrain import PretrainConfig, pretrain

    where = out / "models" / name
    if not (where / "model.safetensors").is_file():
        spec = out / f"{name}.json"
        spec.write_text(json.dumps(model))
        pretrain(PretrainConfig(model=str(spec), objective="mlm", data=str(shards), out=str(where), val_batches=10,
                                device="cpu", overwrite=True, train=train_config(steps, lr)), log=quiet)
    return where


def distill_model(out: Path, name: str, teacher: Path, shards: Path, steps: int, lr: float, **kw) -> Path:
    from lmforge.recipes.distill import DistillConfig, distill

    where = out / "models" / name
    if not (where / "model.safetensors").is_file():
        distill(DistillConfig(teacher=str(teacher), data=str(shards), out=str(where), val_batches=10, device="cpu",
                              overwrite=True, train=train_config(steps, lr), **kw), log=quiet)
    return where


def finetune_model(out: Path, name: str, model: Path, cola: Path, seed: int, epochs: float) -> dict:
    from lmforge.recipes.finetune import FinetuneConfig, evaluate_dir, finetune

    where = out / "finetune" / f"{name}-seed{seed}"
    if not (where / "scores.json").is_file():
        dev = finetune(FinetuneConfig(model=str(model), task="glue-cola", data=str(cola), out=str(where), epochs=epochs,
                                      lr=3e-4, batch_size=16, max_length=SEQ, seed=seed, device="cpu", progress=False,
                                      overwrite=True), log=quiet)
        test = evaluate_dir(str(where), task=None, data=str(cola), split="test", out=str(where / "test"),
                            device="cpu", log=quiet, overwrite=True)
        (where / "scores.json").write_text(json.dumps({"dev_mcc": dev["mcc"], "test_mcc": test["mcc"]}))
    return json.loads((where / "scores.json").read_text()) | {"dir": str(where)}


def task_distill(out: Path, teacher_cola: Path, general: Path, cola: Path, seed: int, epochs: float) -> dict:
    from lmforge.recipes.distill import DistillConfig, distill
    from lmforge.recipes.finetune import evaluate_dir
    from lmforge.train import TrainConfig

    where = out / "finetune" / f"tinybert-task-seed{seed}"
    if not (where / "scores.json").is_file():
        train = TrainConfig(lr=3e-4, batch_size=16, seq_len=SEQ, seed=seed, warmup_ratio=0.1, progress=False)
        dev = distill(DistillConfig(teacher=str(teacher_cola), student=str(general), recipe="tinybert",
                                    task="glue-cola", task_data=str(cola), out=str(where), task_epochs=max(1.0, epochs / 2),
                                    pred_epochs=epochs, device="cpu", overwrite=True, train=train), log=quiet)
        test = evaluate_dir(str(where / "prediction"), task=None, data=str(cola), split="test",
                            out=str(where / "test"), device="cpu", log=quiet, overwrite=True)
        (where / "scores.json").write_text(json.dumps({"dev_mcc": dev["mcc"], "test_mcc": test["mcc"]}))
    return json.loads((where / "scores.json").read_text()) | {"dir": str(where / "prediction")}


def latencies(dirs: dict[str, str], rounds: int = 90) -> dict[str, dict[str, float]]:
    """Median forward time of each classifier at batch 1 and 32 (one thread, eval, no grad), in turns."""
    import torch

    from lmforge import Model

    torch.set_num_threads(1)
    models = {name: Model.from_pretrained(d).eval() for name, d in dirs.items()}
    g = torch.Generator().manual_seed(0)
    vocab = min(m.config.vocab_size for m in models.values())
    inputs = {b: torch.randint(5, vocab, (b, SEQ), generator=g) for b in (1, BATCH)}
    times: dict[str, dict[int, list[float]]] = {n: {1: [], BATCH: []} for n in models}
    with torch.inference_mode():
        for r in range(rounds + 3):
            for b, ids in inputs.items():
                order = list(models) if r % 2 == 0 else list(reversed(models))
                for name in order:
                    if b == BATCH and r % 3:  # batch 32 every third round (each call is ~30x longer)
                        continue
                    t0 = time.perf_counter()
                    models[name](ids)
                    if r >= 3:
                        times[name][b].append(time.perf_counter() - t0)
    return {n: {"ms_b1": 1e3 * statistics.median(t[1]), "ms_b32": 1e3 * statistics.median(t[BATCH])}
            for n, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/lmforge-distill")
    p.add_argument("--steps", type=int, default=1500, help="teacher pre-training steps")
    p.add_argument("--distill-steps", type=int, default=800, help="student steps (each recipe and the baseline)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    p.add_argument("--ft-epochs", type=float, default=10, help="fine-tuning epochs (task stage 2 too)")
    p.add_argument("--png", default=None, help="write the size / score chart here")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, load0 = time.time(), os.getloadavg()
    shards, cola = data(out)
    log(f"data ready ({time.time() - started:.0f}s)")
    teacher = pretrain_model(out, "teacher", TEACHER, shards, args.steps, 2e-3)
    log(f"teacher pre-trained ({time.time() - started:.0f}s)")
    s = args.distill_steps
    (out / "tiny.json").write_text(json.dumps(TINY_STUDENT))
    students = {
        "distilbert": distill_model(out, "distilbert", teacher, shards, s, 2e-3, recipe="distilbert"),
        "no teacher": pretrain_model(out, "no-teacher", {
            **json.loads((out / "models" / "distilbert" / "config.json").read_text()), "head": "mlm"},
            shards, s, 2e-3),
        "tinybert": distill_model(out, "tinybert", teacher, shards, s, 2e-3, recipe="tinybert",
                                  student=str(out / "tiny.json")),
    }
    log(f"students trained ({time.time() - started:.0f}s)")
    rows: dict[str, list[dict]] = {"teacher": [], "distilbert": [], "no teacher": [], "tinybert (+task)": [],
                                   "tinybert (direct)": []}
    for seed in args.seeds:
        rows["teacher"].append(finetune_model(out, "teacher", teacher, cola, seed, args.ft_epochs))
        rows["distilbert"].append(finetune_model(out, "distilbert", students["distilbert"], cola, seed, args.ft_epochs))
        rows["no teacher"].append(finetune_model(out, "no-teacher", students["no teacher"], cola, seed, args.ft_epochs))
        rows["tinybert (direct)"].append(finetune_model(out, "tinybert-direct", students["tinybert"], cola, seed, args.ft_epochs))
        rows["tinybert (+task)"].append(task_distill(out, Path(rows["teacher"][-1]["dir"]), students["tinybert"],
                                                     cola, seed, args.ft_epochs))
        log(f"seed {seed} fine-tuned ({time.time() - started:.0f}s)")
    dirs = {name: runs[0]["dir"] for name, runs in rows.items()}
    speed = latencies(dirs)
    from lmforge import Model

    results = {}
    for name, runs in rows.items():
        model = Model.from_pretrained(dirs[name])
        mcc = [r["test_mcc"] for r in runs]
        results[name] = {"params": model.num_parameters(), "bytes": (Path(dirs[name]) / "model.safetensors").stat().st_size,
                         **speed[name], "test_mcc": statistics.mean(mcc),
                         "test_mcc_std": statistics.stdev(mcc) if len(mcc) > 1 else 0.0,
                         "dev_mcc": statistics.mean(r["dev_mcc"] for r in runs), "runs": runs}
    t = results["teacher"]
    lines = ["| model | parameters | size on disk | CPU ms, batch 1 | CPU ms, batch 32 | test MCC | % of teacher |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        pct = f"{r['test_mcc'] / t['test_mcc']:.0%}" if t["test_mcc"] > 0 else "n/a"
        lines.append(f"| {name} | {r['params']:,} ({r['params'] / t['params']:.0%}) | {r['bytes'] / 1e6:.2f} MB | "
                     f"{r['ms_b1']:.2f} ({t['ms_b1'] / r['ms_b1']:.1f}x) | {r['ms_b32']:.1f} "
                     f"({t['ms_b32'] / r['ms_b32']:.1f}x) | {r['test_mcc']:.3f} +- {r['test_mcc_std']:.3f} | "
                     f"{pct} |")
    import torch

    facts = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
             "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
             "cores": os.cpu_count(), "load_before": load0, "load_after": os.getloadavg(),
             "wall_s": round(time.time() - started), "seeds": args.seeds, "steps": args.steps,
             "distill_steps": s}
    try:
        facts["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:14]
    except OSError:
        pass
    (out / "results.json").write_text(json.dumps({"facts": facts, "results": results}, indent=1))
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in facts.items() if k != "lscpu"}))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in results.items():
            ax.errorbar(r["params"] / 1e3, r["test_mcc"], yerr=r["test_mcc_std"], fmt="o", capsize=3)
            ax.annotate(name, (r["params"] / 1e3, r["test_mcc"]), textcoords="offset points", xytext=(5, 5))
        ax.set_xlabel("parameters (thousands)")
        ax.set_ylabel(f"toy CoLA test MCC (mean of {len(args.seeds)} seed(s))")
        ax.set_title("distillation at toy scale")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
