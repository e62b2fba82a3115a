"""The gain of pre-training over the same model from scratch, against pre-training steps (issue 23's fallback).

    python benchmarks/budget_gain_curve.py --work W --models 258=W1/pt/budget 1593=W2/pt/budget ... \\
        --seeds 0 1 2 [--parallel 2] [--lr LR]

``--work`` is a ``benchmarks/budget_pretraining.py`` work directory (its ``tok/``, ``shards/`` and ``sst2/``: the
tokenizer, the pre-training shards and the 8,000 + 2,000 SST-2 rows). Each ``--models`` entry is a pre-trained
model directory of the same architecture (``LABEL=DIR``; a run of ``--recipe budget`` for a time budget or a
fixed ``--max-steps``: the schedule spans the run either way). For each: its steps (trainer_state.json), the
masked-token accuracy on the shared validation masks, and ``lmforge finetune --task glue-sst2`` with the default
fine-tuning settings (3 epochs, batch 32, warmup 0.1, the width's default lr unless ``--lr``) for every seed;
plus the same architecture from random weights (``scratch``). Prints a table, writes WORK/gain_curve.json and
WORK/gain_curve.png (gain in accuracy points against steps, mean +- sd over seeds). One thread per process,
``--parallel`` processes at a time; the fine-tuning scores do not depend on the load (only the wall clock does).
``--mlm-only OUT.json``: the masked-token accuracy of each model only (the equal-steps ablation of the recipe).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def _finetune(work: Path, model: Path, label: str, seed: int, lr: float | None, scratch: bool) -> dict:
    from lmforge.recipes.finetune import FinetuneConfig, finetune

    out = work / "curve-ft" / f"{label}-s{seed}"
    cfg = FinetuneConfig(model=str(model), task="glue-sst2", data=str(work / "sst2"), out=str(out), seed=seed,
                         from_scratch=scratch, progress=False, overwrite=True, lr=lr)
    t = time.time()
    metrics = finetune(cfg, log=lambda m: None)
    return {"label": label, "seed": seed, "accuracy": metrics.get("accuracy"), "seconds": round(time.time() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=[], metavar="LABEL=DIR")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning lr (default: lmforge's default for the width)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--mlm-only", type=Path, metavar="JSON", help="only the masked-token accuracy of --models "
                    "(an ablation at equal steps): write it to JSON and print a table, no fine-tuning")
    ap.add_argument("_job", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import budget_pretraining as bp

    if args._job:  # a worker: eval LABEL DIR | finetune LABEL DIR SEED SCRATCH
        bp._threads()
        kind, label, path = args._job[0], args._job[1], Path(args._job[2])
        if kind == "eval":
            arm = "hf" if label.startswith("hf") else label  # an HF BertForMaskedLM directory
            print("RESULT " + json.dumps({"label": label, **bp.mlm_eval(args.work, arm, path=path)}))
        else:
            print("RESULT " + json.dumps(_finetune(args.work, path, label, int(args._job[3]), args.lr,
                                                   args._job[4] == "1")))
        return
    models = dict(m.split("=", 1) for m in args.models)
    res: dict = {"machine_before": bp.machine(), "seeds": args.seeds, "lr": args.lr, "models": {}}
    for label, path in models.items():
        state = Path(path) / "trainer_state.json"  # the HF arm of budget_pretraining.py logs metrics.jsonl only
        step = (json.loads(state.read_text())["step"] if state.is_file()
                else json.loads((Path(path) / "metrics.jsonl").read_text().splitlines()[-1])["step"])
        res["models"][label] = {"dir": path, "steps": step}
    common = ["--work", str(args.work)] + (["--lr", str(args.lr)] if args.lr else [])
    log = args.work / "curve-log.txt"

    def pool(jobs: list[list[str]]) -> list[dict]:  # budget_pretraining's process pool, running this script
        outs = bp._pool([common + job for job in jobs], args.parallel, log, script=HERE)
        return [json.loads(line[7:]) for out in outs for line in out.splitlines() if line.startswith("RESULT ")]

    if args.mlm_only:
        res["mlm"] = {r["label"]: r for r in pool([["eval", label, path] for label, path in models.items()])}
        res["machine"] = bp.machine()
        args.mlm_only.write_text(json.dumps(res, indent=2))
        print("| arm | steps | val MLM loss | masked-token acc. | x unigram |\n|---|---|---|---|---|")
        for label, m in res["mlm"].items():
            print(f"| {label} | {res['models'][label]['steps']} | {m['mlm_loss']:.3f} | {m['mlm_accuracy']:.3f} | "
                  f"{m['mlm_accuracy'] / m['unigram_accuracy']:.1f}x |")
        return
    first = next(iter(models.values()))
    # a previous run's results for the same model directory, seed and lr are reused (add models one at a time)
    old = json.loads((args.work / "gain_curve.json").read_text()) if (args.work / "gain_curve.json").is_file() else {}
    old_dirs = {k: v["dir"] for k, v in old.get("models", {}).items()}
    same = old.get("lr") == args.lr
    mlm = {k: v for k, v in old.get("mlm", {}).items() if same and old_dirs.get(k) == models.get(k)}
    mlm.update({r["label"]: r for r in pool([["eval", label, path] for label, path in models.items() if label not in mlm])})
    res["mlm"] = mlm
    done = [r for r in old.get("finetune", []) if same and r["seed"] in args.seeds
            and (r["label"] == "scratch" or old_dirs.get(r["label"]) == models.get(r["label"]))]
    have = {(r["label"], r["seed"]) for r in done}
    jobs = [["finetune", label, path, str(s), "0"] for s in args.seeds for label, path in models.items()
            if (label, s) not in have]
    jobs += [["finetune", "scratch", first, str(s), "1"] for s in args.seeds if ("scratch", s) not in have]
    res["finetune"] = done + pool(jobs)
    res["machine"] = bp.machine()
    (args.work / "gain_curve.json").write_text(json.dumps(res, indent=2))
    report(args.work)


def report(work: Path) -> None:
    import numpy as np

    res = json.loads((work / "gain_curve.json").read_text())
    acc: dict[str, list[float]] = {}
    for r in res["finetune"]:
        acc.setdefault(r["label"], []).append(r["accuracy"])
    base = float(np.mean(acc["scratch"]))
    print(f"machine: {res['machine']}")
    print("| pre-training | steps (x 32 x 128 tokens) | masked-token acc. | SST-2 dev acc. mean +- sd (seeds) | gain vs scratch |")
    print("|---|---|---|---|---|")
    rows = []
    for label, m in sorted(res["models"].items(), key=lambda kv: kv[1]["steps"]):
        a = np.array(acc.get(label, []))
        gain = 100 * (a.mean() - base)
        if not label.startswith("hf"):  # HF's recipe (another architecture) is listed, not drawn on the curve
            rows.append((m["steps"], gain, 100 * a.std()))
        print(f"| {label} | {m['steps']} | {res['mlm'][label]['mlm_accuracy']:.3f} | {a.mean():.4f} +- {a.std():.4f} "
              f"({len(a)}) | {gain:+.1f} pts |")
    s = np.array(acc["scratch"])
    print(f"| scratch | 0 | - | {s.mean():.4f} +- {s.std():.4f} ({len(s)}) | - |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs, ys, es = zip(*rows)
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label="pre-trained minus scratch (sd of the seeds)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(2, color="red", lw=0.8, ls="--", label="issue 23 target (+2 points)")
    ax.axhspan(-100 * s.std(), 100 * s.std(), color="grey", alpha=0.15, label="scratch's seed sd")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("pre-training steps of 32 x 128 tokens (budget recipe, bert-tiny)")
    ax.set_ylabel("SST-2 dev accuracy gain (points)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(work / "gain_curve.png", dpi=110)
    print(f"wrote {work / 'gain_curve.png'}")


if __name__ == "__main__":
    main()
