"""Fine-tuning wall clock: `lmforge finetune` vs HF `Trainer`, same model, data, epochs, batch and lr, same run.

    python benchmarks/finetuning.py [--tasks sst2 cola squad squad300] [--seeds 1 2 3] [--threads 1] [--size mini|base]
                                    [--variants lmforge hf ...] [--rows 8000] [--quick] [--refdata DIR]
                                    [--epochs N] [--lr LR]      # both sides; e.g. where a random-init model learns
    python benchmarks/finetuning.py --profile [--profile-steps N]     # where lmforge's time goes, by phase

Workloads (issue 24): a bert-mini shaped encoder (L4 / H256 / A4; `--size base`: L12 / H768 / A12) with
random weights and the bert-base-uncased vocabulary, fine-tuned from the same HF checkpoint directory on
* sst2: the first 8,000 rows of SST-2 train (`--rows`), 1 epoch, evaluated on 1,000 held-out train rows
  (19,001-20,000; `--dev-rows`): accuracy;
* cola: the 400-row CoLA train sample, 3 epochs, dev sample (150): MCC;
* squad: the SQuAD v1.1 layout sample (5 questions; the only v1.1 file in refdata) trained and evaluated
  on itself, 2 epochs, max length 384, doc stride 128: F1;
* squad300: 300 training / 100 dev cloze questions on real WikiText-2 paragraphs in the SQuAD v1.1 layout
  (benchmarks/squad_cloze.py says how they are made), 2 epochs, max length 384, doc stride 128: F1 by the
  official normalisation (lmforge's metric, for both sides).
Batch 32 (squad 16), lr 1e-4, warmup 10 %, weight decay 0.01, clipping 1.0, fp32, dropout 0.1, max length
128, evaluation every epoch, eval batch 64.

Sides (each run in its own subprocess: its own peak RSS; `torch.set_num_threads(--threads)`):
* `hf`: `AutoModelFor*.from_pretrained` + `BertTokenizerFast.from_pretrained` (`hf_tokenizer`; after the timed
  region `same_tokens` checks that HF trained on the token ids lmforge makes; GLUE: the tokenizer's batch call, as
  `dataset.map` does; SQuAD: lmforge's windows, which the tests pin to HF `run_qa`'s) + `Trainer` with
  `DataCollatorWithPadding`, `eval_strategy="epoch"`, `save_strategy="no"` (it saves nothing; lmforge
  writes best/ and the final model), its default optimizer; evaluation through `compute_metrics`
  (SQuAD: a callback after every epoch, as run_qa.py's `QuestionAnsweringTrainer.evaluate`:
  `Trainer.predict` + lmforge's n-best decoding and the official metric, counted in HF's time).
* `lmforge`: `finetune(FinetuneConfig(...))`, everything it does (read, featurize with a cold feature
  cache, train, evaluate every epoch, re-score the best epoch, write the outputs and the model).
* ablation variants: `lmforge-none` (every speed-up off: `--disable group-by-length padding-free
  feature-cache cls-only sparse-rows`), `lmforge-group` (length grouping only), `lmforge-free`
  (padding-free only), `lmforge-bf16` (all on, `--precision bf16`); `lmforge-nogroup` / `lmforge-nofree` /
  `lmforge-nocache` / `lmforge-nocls` / `lmforge-nosparse` (all on but that one: `--disable group-by-length` /
  `padding-free` / `feature-cache` / `cls-only` / `sparse-rows`).

The sides run one after the other in an order that flips every seed (hf, lmforge, ..., then reversed), so a
change of load on a shared machine hits both; the table gives the median wall clock over seeds, the ratio HF /
lmforge of the medians and the median (and range) of the per-seed ratios (a seed's two runs are adjacent in
time, so a pair cancels the machine's slow drifts), the metric mean +- std and the peak RSS. The load average
is printed with each run, and the CPU time of the timed region (with one thread: the work done, whatever else
a shared machine runs meanwhile) and the whole worker process's wall clock as the parent saw it (interpreter
start, imports and all: what running a script costs). `import torch._dynamo` (1-2 s, which every torch
optimizer pulls in on first use) happens before both timed regions: HF's side imports it with transformers,
lmforge's worker imports it explicitly (until 2026-12-04 evening it fell inside lmforge's timed region).
Results: docs/finetuning.md, "Speed".
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()
SIZES = {"mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
         "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)}
TASKS = {  # name -> lmforge task, epochs, batch, max length, metric key
    "sst2": ("glue-sst2", 1.0, 32, 128, "accuracy"),
    "cola": ("glue-cola", 3.0, 32, 128, "mcc"),
    "squad": ("squad", 2.0, 16, 384, "f1"),
    "squad300": ("squad", 2.0, 16, 384, "f1"),  # benchmarks/squad_cloze.py: 300 train / 100 dev questions
}
VARIANTS = {  # name -> FinetuneConfig overrides
    "lmforge": {},
    "lmforge-none": {"group_by_length": False, "padding_free": False, "feature_cache": False, "cls_only": False,
                     "sparse_rows": False},
    "lmforge-group": {"padding_free": False, "feature_cache": False, "cls_only": False, "sparse_rows": False},
    "lmforge-free": {"group_by_length": False, "feature_cache": False, "cls_only": False, "sparse_rows": False},
    "lmforge-bf16": {"precision": "bf16"},
    # the ablation: each speed-up switched off alone (`--disable NAME`)
    "lmforge-nogroup": {"group_by_length": False},
    "lmforge-nofree": {"padding_free": False},
    "lmforge-nocache": {"feature_cache": False},
    "lmforge-nocls": {"cls_only": False},
    "lmforge-nosparse": {"sparse_rows": False},
}
LR, WARMUP, WD, EVAL_BATCH = 1e-4, 0.1, 0.01, 64


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------ data and the shared checkpoint
def prepare(root: Path, refdata: Path, rows: int, size: str, dev_rows: int = 1000) -> dict[str, Path]:
    """Data directories per task and one random-init HF BERT checkpoint both sides load."""
    import torch
    from transformers import BertConfig, BertModel

    sst = root / "sst2"
    sst.mkdir()
    lines = (refdata / "glue" / "SST-2" / "train_20k.tsv").read_text(encoding="utf-8").splitlines()
    (sst / "train.tsv").write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    (sst / "dev.tsv").write_text("\n".join([lines[0], *lines[19001:19001 + dev_rows]]) + "\n", encoding="utf-8")
    squad = root / "squad"
    squad.mkdir()
    sample = (refdata / "squad" / "squad-v1.1-format-sample.json").read_text(encoding="utf-8")
    (squad / "train.json").write_text(sample, encoding="utf-8")
    (squad / "dev.json").write_text(sample, encoding="utf-8")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from squad_cloze import write as write_cloze

    write_cloze(root / "squad300", train=300, dev=100, text_file=refdata / "text" / "wikitext-2-test.txt")
    model = root / "model"
    torch.manual_seed(0)
    vocab = refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt"
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[size])
    BertModel(config).save_pretrained(model)
    (model / "vocab.txt").write_text(vocab.read_text(encoding="utf-8"), encoding="utf-8")
    return {"sst2": sst, "cola": refdata / "glue" / "CoLA", "squad": squad, "squad300": root / "squad300",
            "model": model}


# ------------------------------------------------------------------ the two sides (worker processes)
def run_lmforge(job: dict) -> dict:
    import torch._dynamo  # noqa: F401 - outside the timed region, as HF's side gets it with `import transformers`

    from lmforge.recipes.finetune import FinetuneConfig, finetune

    name, epochs, batch, length, key = TASKS[job["task"]]
    epochs, lr = job.get("epochs") or epochs, job.get("lr") or LR
    os.environ["LMFORGE_CACHE"] = tempfile.mkdtemp(prefix="ftbench-cache-")  # cold: featurization counts
    options = dict(VARIANTS[job["variant"]])
    extra = {"doc_stride": 128} if name == "squad" else {}
    t0, c0 = time.perf_counter(), time.process_time()
    scores = finetune(FinetuneConfig(
        model=job["model"], task=name, data=job["data"], out=tempfile.mkdtemp(prefix="ftbench-out-"),
        epochs=epochs, lr=lr, warmup=WARMUP, weight_decay=WD, batch_size=batch, eval_batch_size=EVAL_BATCH,
        max_length=length, seed=job["seed"], progress=False, device="cpu", task_options=extra, **options),
        log=lambda m: None)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "metric": scores[key]}


def run_hf(job: dict) -> dict:
    import numpy as np
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments)

    from lmforge.tasks import featurize_all, get_task

    name, epochs, batch, length, key = TASKS[job["task"]]
    epochs, lr = job.get("epochs") or epochs, job.get("lr") or LR
    task = get_task(name, **({"doc_stride": 128} if name == "squad" else {}))
    t0, c0 = time.perf_counter(), time.process_time()
    tok = hf_tokenizer(job["model"])
    train_ex, dev_ex = task.read(job["data"], "train"), task.read(job["data"], task.eval_splits[0])
    keep = ("input_ids", "attention_mask", "token_type_ids")
    if name == "squad":  # the windows HF run_qa makes (tests/tasks/test_featurize.py pins lmforge's to them)
        model = AutoModelForQuestionAnswering.from_pretrained(job["model"])
        train_f, _ = featurize_all(task, train_ex, tok, max_length=length, training=True)
        dev_f, _ = featurize_all(task, dev_ex, tok, max_length=length)
        train = [{**{k: f[k] for k in keep}, "start_positions": f["start_positions"],
                  "end_positions": f["end_positions"]} for f in train_f]
        dev = [{k: f[k] for k in keep} for f in dev_f]
    else:
        model = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=2)

        def encode(examples):
            enc = tok([e["text"] for e in examples], truncation=True, max_length=length)
            return [{**{k: enc[k][i] for k in keep}, "labels": e["label"]} for i, e in enumerate(examples)]

        train, dev = encode(train_ex), encode(dev_ex)

    def compute_metrics(pred):
        if name == "squad":
            return {}
        return task.metric([int(i) for i in np.argmax(pred.predictions, -1)], dev_ex)

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ftbench-hf-"), num_train_epochs=epochs, learning_rate=lr,
        per_device_train_batch_size=batch, per_device_eval_batch_size=EVAL_BATCH, warmup_steps=WARMUP,
        weight_decay=WD, max_grad_norm=1.0, lr_scheduler_type="linear", seed=job["seed"], data_seed=job["seed"],
        eval_strategy="no" if name == "squad" else "epoch", save_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    scores = []

    class SquadEachEpoch(TrainerCallback):
        # run_qa.py's QuestionAnsweringTrainer.evaluate: predict, then the n-best decoding and the metric.
        # After every epoch, as lmforge evaluates (to keep the best) and as HF's GLUE rows here do
        # (until 2026-12-05 HF's SQuAD side evaluated once, after training: one evaluation less than lmforge).
        def on_epoch_end(self, args, state, control, **kwargs):
            out = trainer.predict(dev).predictions  # training_step puts the model back in train mode
            starts, ends = out[0], out[1]
            outputs = [(s[: len(f["input_ids"])], e[: len(f["input_ids"])]) for s, e, f in zip(starts, ends, dev_f)]
            scores.append(task.metric(task.postprocess(outputs, dev_f, dev_ex), dev_ex)[key])

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics,
                      callbacks=[SquadEachEpoch()] if name == "squad" else None)
    trainer.train()
    if name == "squad":
        assert len(scores) == int(epochs), scores  # one evaluation after each epoch, as lmforge's
        metric = max(scores)  # the best epoch's, as lmforge keeps the best
    else:
        evals = [h for h in trainer.state.log_history if f"eval_{key}" in h]
        metric = max(h[f"eval_{key}"] for h in evals)  # the best epoch's, as lmforge keeps the best
    out = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "metric": metric}
    same_tokens(job, task, name, length, [f["input_ids"] for f in train])  # after the timed region
    return out


def hf_tokenizer(model_dir: str):
    """HF's fast BERT tokenizer on the checkpoint's vocab.txt, as ``from_pretrained`` finds it. Not
    ``BertTokenizerFast(vocab_file=...)``: transformers 5 names that argument ``vocab`` and ignores
    ``vocab_file`` without a word, building a 5-token vocabulary that turns every word into [UNK]; until
    2026-12-05 evening this benchmark's HF side trained on [UNK]s that way (docs/finetuning.md)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(model_dir, do_lower_case=True)


def same_tokens(job: dict, task, name: str, length: int, hf_ids: list[list[int]]) -> None:
    """Stop the benchmark unless HF's side trained on the token ids lmforge's side makes from the same rows."""
    import lmforge.recipes.finetune as ft
    from lmforge.tasks import featurize_all

    examples = task.read(job["data"], "train")
    ours, _ = featurize_all(task, examples, ft.load_tokenizer(job["model"], None), max_length=length, training=True)
    if [f["input_ids"] for f in ours] != hf_ids:
        raise SystemExit(f"{name}: HF's tokenizer gave other token ids than lmforge's for the same rows; "
                         "the two sides would not train on the same input")


def worker(job: dict) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    out = run_hf(job) if job["variant"] == "hf" else run_lmforge(job)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------ where the time goes (--profile)
def profile(data: Path, model_dir: str, threads: int, steps: int | None) -> None:
    """lmforge's fine-tuning step by phase on SST-2, every speed-up off vs on, steps interleaved."""
    import torch

    from lmforge.objectives.base import BatchSource, LengthGroupedBatchSource
    from lmforge.recipes.finetune import TaskObjective, _length, load_model, load_tokenizer, predict
    from lmforge.tasks import featurize_all, get_task
    from lmforge.train import TrainConfig
    from lmforge.train.optim import build_optimizer, param_groups

    torch.set_num_threads(threads)
    task = get_task("glue-sst2")
    tok = load_tokenizer(model_dir, None)
    t = time.perf_counter()
    train, dev = task.read(data, "train"), task.read(data, "dev")
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    feats, _ = featurize_all(task, train, tok, max_length=128, training=True)
    dev_f, _ = featurize_all(task, dev, tok, max_length=128)
    feat_s = time.perf_counter() - t
    print(f"read {read_s:.2f} s, featurize {feat_s:.2f} s ({len(train)} + {len(dev)} rows)")
    sides = {}
    for name, fast in (("none", False), ("all", True)):
        torch.manual_seed(0)
        model, _ = load_model(model_dir, task, tok, log=lambda m: None)
        model.body.padding_free = fast
        model.cls_only_last_layer = fast
        obj = TaskObjective(task, pad_id=0, decoder=None, lm_weight=0.0)
        kw = dict(batch_size=32, seed=1, drop_last=False)
        src = (LengthGroupedBatchSource(obj, feats, lengths=[_length(f) for f in feats], **kw) if fast
               else BatchSource(obj, feats, **kw))
        cfg = TrainConfig(lr=LR, batch_size=32, seq_len=128, weight_decay=WD)
        opt = build_optimizer(param_groups(model.named_parameters(), lr=LR, weight_decay=WD), cfg)
        sides[name] = dict(model=model.train(), src=src, opt=opt, obj=obj, padded=0,
                           t=dict(collate=0.0, forward=0.0, backward=0.0, clip=0.0, optimizer=0.0))
    n = min(steps or 10 ** 9, len(sides["all"]["src"]))
    for step in range(n):
        for name in (("none", "all") if step % 2 else ("all", "none")):
            sd, times = sides[name], sides[name]["t"]
            t0 = time.perf_counter()
            batch = sd["src"].batch(0, step)
            t1 = time.perf_counter()
            loss = sd["obj"].loss(sd["model"], batch)[0]
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(sd["model"].parameters(), 1.0)
            t4 = time.perf_counter()
            sd["opt"].step()
            sd["opt"].zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            sd["padded"] += batch["input_ids"].numel()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[key] += dt
    real = sum(len(f["input_ids"]) for f in feats[: n * 32])
    print(f"{n} steps of 32, {real:,} real tokens; load {load()}")
    print("| speed-ups | padded tokens | collate | forward | backward | clip | optimizer | train total | eval (1,000) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, sd in sides.items():
        sd["model"].eval()
        t = time.perf_counter()
        predict(sd["model"], task, dev, dev_f, pad_id=0, batch_size=EVAL_BATCH)
        ev = time.perf_counter() - t
        cells = " | ".join(f"{v:.1f} s" for v in sd["t"].values())
        print(f"| {name} | {sd['padded']:,} | {cells} | {sum(sd['t'].values()):.1f} s | {ev:.1f} s |")


# ------------------------------------------------------------------ the parent: interleave, tabulate
def metric_gap(ms: list[float], hf: list[dict] | None) -> str:
    """The mean metric minus HF's, with twice the standard error of that difference (Welch: sqrt(s1^2 / n1 +
    s2^2 / n2)): a gap inside +- 2 SE is within the seeds' noise (about a 95 % band for normal noise)."""
    if not hf or len(ms) < 2 or len(hf) < 2:
        return "-"
    ref = [r["metric"] for r in hf]
    se = (statistics.variance(ms) / len(ms) + statistics.variance(ref) / len(ref)) ** 0.5
    return f"{statistics.mean(ms) - statistics.mean(ref):+.4f} (+- {2 * se:.4f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    ap.add_argument("--variants", nargs="+", choices=["hf", *VARIANTS], default=["hf", "lmforge"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1: a shared machine)")
    ap.add_argument("--size", choices=list(SIZES), default="mini")
    ap.add_argument("--rows", type=int, default=8000, help="SST-2 training rows (default 8000)")
    ap.add_argument("--dev-rows", type=int, default=1000, help="SST-2 evaluation rows (default 1000)")
    ap.add_argument("--epochs", type=float, help="epochs for every task (default: each task's own, above)")
    ap.add_argument("--lr", type=float, help=f"peak learning rate for both sides (default {LR})")
    ap.add_argument("--quick", action="store_true", help="cola only, one seed (smoke test of the whole table)")
    ap.add_argument("--refdata", type=Path, default=REFDATA)
    ap.add_argument("--profile", action="store_true",
                    help="instead: lmforge's SST-2 step by phase, speed-ups off vs on (interleaved steps)")
    ap.add_argument("--profile-steps", type=int, default=None, help="--profile: this many steps (default: 1 epoch)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.quick:
        args.tasks, args.seeds = ["cola"], args.seeds[:1]
    try:
        import accelerate  # noqa: F401 - HF's Trainer refuses to start without it
    except ImportError:
        print("HF's Trainer needs accelerate: pip install -e '.[bench]' (or pip install 'accelerate>=1.1')",
              file=sys.stderr)
        return 2
    import platform

    import torch
    import transformers

    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.threads} thread(s) per side, load {load()}"
          + (f", epochs {args.epochs:g}" if args.epochs else "") + (f", lr {args.lr:g}" if args.lr else ""),
          flush=True)
    root = Path(tempfile.mkdtemp(prefix="ftbench-"))
    paths = prepare(root, args.refdata, args.rows, args.size, args.dev_rows)
    if args.profile:
        profile(paths["sst2"], str(paths["model"]), args.threads, args.profile_steps)
        return 0
    results: dict[tuple[str, str], list[dict]] = {}
    for task in args.tasks:
        for i, seed in enumerate(args.seeds):
            order = args.variants if i % 2 == 0 else list(reversed(args.variants))
            for variant in order:
                job = {"task": task, "variant": variant, "seed": seed, "threads": args.threads,
                       "model": str(paths["model"]), "data": str(paths[task]), "epochs": args.epochs, "lr": args.lr}
                before = load()
                p0 = time.perf_counter()
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                                      text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                    return proc.returncode or 1
                r = json.loads(line[0][7:])
                r["load"], r["proc_s"] = before, time.perf_counter() - p0
                results.setdefault((task, variant), []).append(r)
                print(f"{task} seed {seed} {variant}: {r['wall_s']:.1f} s (CPU {r['cpu_s']:.1f} s, whole process "
                      f"{r['proc_s']:.1f} s), "
                      f"{TASKS[task][4]} {r['metric']:.4f}, "
                      f"peak {r['peak_rss_mb']:.0f} MB, load {before}", flush=True)
    print(f"\n| task ({args.size}) | side | wall s (median of {len(args.seeds)}) | HF / side "
          "| HF / side, per-seed pairs: median (min-max) | CPU s (median) | HF / side, CPU | whole process s "
          "| HF / side, process | metric (mean +- std) | metric - HF's (+- 2 SE) | peak RSS MB |"
          "\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        hf = statistics.median(r["wall_s"] for r in results[(task, "hf")]) if (task, "hf") in results else None
        hf_cpu = statistics.median(r["cpu_s"] for r in results[(task, "hf")]) if hf else None
        hf_proc = statistics.median(r["proc_s"] for r in results[(task, "hf")]) if hf else None
        for variant in args.variants:
            rs = results[(task, variant)]
            wall = statistics.median(r["wall_s"] for r in rs)
            cpu = statistics.median(r["cpu_s"] for r in rs)
            proc = statistics.median(r["proc_s"] for r in rs)
            ms = [r["metric"] for r in rs]
            std = f" +- {statistics.stdev(ms):.4f}" if len(ms) > 1 else ""
            ratio, cpu_ratio, proc_ratio = ((f"{hf / wall:.2f}x", f"{hf_cpu / cpu:.2f}x", f"{hf_proc / proc:.2f}x")
                                            if hf else ("-", "-", "-"))
            # a seed's two sides run one right after the other, so a pair's ratio cancels the machine's slow drifts
            pairs = sorted(h["wall_s"] / r["wall_s"] for h, r in zip(results.get((task, "hf"), []), rs))
            paired = f"{statistics.median(pairs):.2f}x ({pairs[0]:.2f}-{pairs[-1]:.2f})" if hf else "-"
            print(f"| {task} | {variant} | {wall:.1f} | {ratio} | {paired} | {cpu:.1f} | {cpu_ratio} | {proc:.1f} "
                  f"| {proc_ratio} "
                  f"| {TASKS[task][4]} {statistics.mean(ms):.4f}{std} | {metric_gap(ms, results.get((task, 'hf')))} "
                  f"| {max(r['peak_rss_mb'] for r in rs):.0f} |")
    print(f"\nload after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
