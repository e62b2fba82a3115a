"""MLM vs RTD (ELECTRA) at equal pre-training compute, on the built-in toy language: ``equal_compute(out)``.

The ELECTRA paper's claim (Clark et al. 2020, table 1 / figure 4): for the same pre-training FLOPs, the
replaced-token-detection discriminator fine-tunes better than an MLM model of the same size. Here, at toy
scale, one command:

  data         lmforge.data.toyland.generate              corpus + the acceptability task (CoLA format)
  tokenizer    Tokenizer.train (WordPiece)                 one vocabulary for both objectives
  shards       lmforge.data.shards.prepare_shards
  flops        torch.utils.flop_counter.FlopCounterMode    FLOPs of one training step of each objective
  pretrain     lmforge.recipes.pretrain.pretrain           mlm and rtd, each at every budget
  finetune     lmforge.recipes.finetune.finetune           acceptability, 3 seeds per model, + from scratch
  report       results.json, results.md (the table), equal_compute.png (test MCC vs pre-training FLOPs)

Compute is counted, not estimated: a step's FLOPs are what ``FlopCounterMode`` records over
``objective.loss(model, batch)`` + ``backward()`` (every matmul and attention product, forward and
backward: for rtd the generator's and the discriminator's; CPU SDPA counted with torch's own SDPA
formula), averaged over a few batches. Two counts: "full" runs the step with every position through
every layer (the networks in eval mode, no dropout here anyway), which is how the paper and BERT count
(~ 6 x parameters x tokens + attention, per network), and "executed" is the training step as lmforge
runs it, where the MLM model's and the generator's last layer compute only the masked rows. Budgets
use the full count: a budget is a number of MLM steps, and the rtd run of that budget takes
``round(budget FLOPs / rtd step FLOPs)`` steps; the table shows both counts. Both objectives pre-train the same architecture
(the discriminator is the MLM model's size, as ELECTRA-Small vs BERT-Small) on the same sequences with the
same optimizer settings; only the objective differs. Results and what they mean: docs/pretraining.md.

Each finished unit (a pre-training run, a fine-tuning run) is recorded in ``state.json``: running the same
command again continues after the last finished one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

Log = Callable[[str], None]
OBJECTIVES = ("mlm", "rtd")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one flavour of the experiment (the default run, or --fast for the tests)."""

    name: str
    docs: int  # toy corpus stories
    examples: int  # acceptability training examples (dev and test get half as many each)
    vocab: int  # WordPiece vocabulary
    seq_len: int
    batch_size: int
    model: dict[str, Any]  # ModelConfig fields of the MLM model = the rtd discriminator
    generator_size: float  # rtd generator width / the discriminator's
    lr: float  # pre-training peak lr (both objectives)
    budgets: tuple[int, ...]  # pre-training budgets, in MLM steps (the rtd runs get the same FLOPs)
    finetune_epochs: float
    finetune_lr: float
    finetune_batch: int
    seeds: tuple[int, ...]  # fine-tuning seeds per pre-trained model
    flop_batches: int  # batches averaged to count a step's FLOPs


TINY = {"preset": "electra-small", "num_layers": 2, "hidden_size": 128, "embedding_size": 128, "num_heads": 2,
        "intermediate_size": 512, "max_positions": 128, "hidden_dropout": 0.0, "attention_dropout": 0.0}
SETTINGS: dict[str, Settings] = {
    # ~25 minutes on 2 busy CPU cores (1 thread per run); the quickstart's tiny BERT size, no dropout (a few
    # minutes of pre-training cannot over-fit the corpus), the quickstart's pre-training lr for both objectives
    "default": Settings("default", docs=12000, examples=1000, vocab=1000, seq_len=64, batch_size=32, model=TINY,
                        generator_size=0.25, lr=2e-3, budgets=(250, 500, 1000), finetune_epochs=10, finetune_lr=3e-4,
                        finetune_batch=16, seeds=(0, 1, 2), flop_batches=4),
    "fast": Settings("fast", docs=300, examples=60, vocab=400, seq_len=32, batch_size=8,
                     model={**TINY, "hidden_size": 32, "embedding_size": 32, "intermediate_size": 64},
                     generator_size=0.5, lr=2e-3, budgets=(4, 8), finetune_epochs=1, finetune_lr=3e-4,
                     finetune_batch=16, seeds=(0, 1), flop_batches=1),
}


# ------------------------------------------------------------------ FLOPs
def _flop_counter():
    """FlopCounterMode that also counts the CPU flash SDPA kernels (torch registers only the GPU ones)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(q, k, v, *args, out_shape=None, **kwargs) -> int:  # args arrive as shapes
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    mapping = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    return FlopCounterMode(display=False, custom_mapping=mapping)


def step_flops(objective: Any, model: Any, source: Any, *, batches: int, full: bool = True) -> float:
    """Mean FLOPs of one training step (loss forward + backward) over the first ``batches`` batches.
    ``full``: every position through every layer (eval mode); else the step as training runs it."""
    import torch

    model.train(not full)
    nets = [model, *objective.extra_modules().values()]
    total = 0
    for i in range(batches):
        with _flop_counter() as counter:
            loss, _ = objective.loss(model, source.batch(0, i))
            loss.backward()
        total += counter.get_total_flops()
        for net in nets:
            net.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # counting used the RNG; what runs next reseeds anyway
    model.train()
    return total / batches


def count_step_flops(settings: Settings, shards: Path, model_file: Path) -> dict[str, dict[str, float]]:
    """{"full" | "executed": {objective: FLOPs of one training step}} for the experiment's model."""
    import torch

    from lmforge import Model, ModelConfig
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.objectives.rtd import RTDConfig

    ds = ShardDataset(shards, "train")
    tok = ds.load_tokenizer()
    fields = json.loads(model_file.read_text())
    out: dict[str, dict[str, float]] = {"full": {}, "executed": {}}
    for name in OBJECTIVES:
        rtd = RTDConfig(generator_size=settings.generator_size) if name == "rtd" else None
        objective = build_objective(name, tokenizer=tok, seq_len=settings.seq_len, rtd=rtd)
        torch.manual_seed(0)
        config = ModelConfig.from_preset(fields["preset"], **{k: v for k, v in fields.items() if k != "preset"},
                                         head=objective.heads(None), vocab_size=len(tok))
        model = Model(config)
        if name == "rtd":
            objective.attach(model)
        source = BatchSource(objective, ds, batch_size=settings.batch_size, seed=0)
        for kind in out:
            out[kind][name] = step_flops(objective, model, source, batches=settings.flop_batches, full=kind == "full")
    return out


# ------------------------------------------------------------------ the stages
class _State:
    """What is done, in OUT/state.json (rewritten atomically after every unit)."""

    def __init__(self, out: Path, settings: Settings) -> None:
        self.path = out / "state.json"
        self.data: dict[str, Any] = {"settings": settings.name, "done": {}}
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
            if self.data.get("settings") != settings.name:
                raise LmforgeError(f"{out} holds an equal-compute run with other settings ({self.data.get('settings')});"
                                   " use the same flags to continue it, or another --out")

    def get(self, key: str) -> Any:
        return self.data["done"].get(key)

    def put(self, key: str, value: Any) -> Any:
        self.data["done"][key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)
        return value


@contextlib.contextmanager
def _logged(log_file: Path):
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def _prepare(out: Path, s: Settings) -> dict[str, Any]:
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.tokenization.tokenizer import Tokenizer

    for name in ("data", "tokenizer", "shards"):
        shutil.rmtree(out / name, ignore_errors=True)
    generate(out / "data", docs=s.docs, examples=s.examples, seed=0)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="wordpiece", vocab_size=s.vocab, show_progress=False)
    tok.save_pretrained(out / "tokenizer")
    r = prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=0.02, progress=False)
    return {"train_tokens": r.meta["splits"]["train"]["tokens"], "vocab": len(tok)}


def _pretrain(out: Path, s: Settings, objective: str, steps: int, run: Path) -> dict[str, Any]:
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train.config import TrainConfig
    from lmforge.train.logging import read_metrics

    shutil.rmtree(run, ignore_errors=True)
    train = TrainConfig(max_steps=steps, batch_size=s.batch_size, seq_len=s.seq_len, lr=s.lr, warmup_ratio=0.06,
                        log_every=max(1, steps // 20), seed=0, progress=False)
    t = time.perf_counter()
    pretrain(PretrainConfig(model=str(out / "model.json"), objective=objective, data=str(out / "shards"),
                            out=str(run), val_batches=10, device="cpu", train=train,
                            generator_size=s.generator_size if objective == "rtd" else None))
    records = read_metrics(run)
    last_val = [r for r in records if r.get("split") == "val"][-1:]
    train_records = [r for r in records if r.get("split") == "train"]
    return {"steps": steps, "seconds": round(time.perf_counter() - t, 1),
            "final_loss": round(train_records[-1]["loss"], 4),
            "val": {k: round(v, 4) for k, v in (last_val[0] if last_val else {}).items()
                    if isinstance(v, float)}}


def _finetune(out: Path, s: Settings, model: Path, seed: int, run: Path, *, scratch: bool = False) -> dict[str, Any]:
    from lmforge.recipes.finetune import FinetuneConfig, evaluate_dir, finetune

    shutil.rmtree(run, ignore_errors=True)
    data = out / "data" / "cola"
    dev = finetune(FinetuneConfig(model=str(model), task="glue-cola", data=str(data), out=str(run), from_scratch=scratch,
                                  epochs=s.finetune_epochs, lr=s.finetune_lr, batch_size=s.finetune_batch,
                                  max_length=64, seed=seed, device="cpu"), log=lambda m: print(m))
    test = evaluate_dir(str(run), task=None, data=str(data), split="test", out=str(run / "test"), device="cpu",
                        log=lambda m: print(m))
    for item in run.rglob("*.safetensors"):  # keep the scores, not the 21 fine-tuned models
        item.unlink()
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return {"dev_mcc": round(float(dev["mcc"]), 4), "test_mcc": round(float(test["mcc"]), 4),
            "test_accuracy": round(float(test["accuracy"]), 4)}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return round(statistics.mean(values), 4), round(statistics.stdev(values) if len(values) > 1 else 0.0, 4)


# ------------------------------------------------------------------ entry point
def equal_compute(out: str | Path, *, fast: bool = False, log: Log = print,
                  settings: Settings | None = None) -> dict[str, Any]:
    """Run (or continue) the experiment into ``out``; returns the summary (also in ``out/results.json``).
    ``settings``: other sizes than the default / --fast ones (the lab's shorter run)."""
    import torch

    s = settings or SETTINGS["fast" if fast else "default"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, s)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on shared cores: one thread per run is faster than two fighting
    try:
        prep = state.get("prepare") or state.put("prepare", _timed(log, "data, tokenizer, shards", out / "logs" / "prepare.log",
                                                                   lambda: _prepare(out, s)))
        (out / "model.json").write_text(json.dumps(s.model, indent=1) + "\n")
        counts = state.get("flops") or state.put("flops", count_step_flops(s, out / "shards", out / "model.json"))
        for kind, c in counts.items():
            log(f"FLOPs per training step ({kind}): mlm {c['mlm']:.4g}, rtd {c['rtd']:.4g} (rtd / mlm = "
                f"{c['rtd'] / c['mlm']:.3f})")
        flops = counts["full"]
        plan = [(obj, k, b, b if obj == "mlm" else max(1, round(b * flops["mlm"] / flops["rtd"])))
                for k, b in enumerate(s.budgets) for obj in OBJECTIVES]
        for obj, k, budget, steps in plan:
            key = f"pretrain/{obj}-{k}"
            if state.get(key) is None:
                state.put(key, _timed(log, f"pre-train {obj}, budget {k + 1} ({steps} steps)",
                                      out / "logs" / f"{obj}-{k}.log",
                                      lambda: _pretrain(out, s, obj, steps, out / key)))
        models = [(f"{obj}-{k}", out / "pretrain" / f"{obj}-{k}", False) for obj, k, _, _ in plan]
        models.append(("scratch", out / "pretrain" / "mlm-0", True))
        for name, model, scratch in models:
            for seed in s.seeds:
                key = f"finetune/{name}/seed-{seed}"
                if state.get(key) is None:
                    state.put(key, _timed(log, f"fine-tune {name}, seed {seed}", out / "logs" / f"ft-{name}-{seed}.log",
                                          lambda: _finetune(out, s, model, seed, out / key, scratch=scratch)))
    finally:
        torch.set_num_threads(threads)
    summary = summarize(state.data["done"], s, counts, prep)
    summary["total_minutes"] = round((time.perf_counter() - t0) / 60, 1)
    summary["machine"] = machine()
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = results_table(summary)
    (out / "results.md").write_text(table + "\n")
    plot(summary, out / "equal_compute.png")
    log("")
    log(table)
    return summary


def _timed(log: Log, what: str, log_file: Path, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        with _logged(log_file):
            result = fn()
    except Exception as err:
        raise LmforgeError(f"{what} failed: {err}. Log: {log_file}. Run the same command again to continue after "
                           "the last finished step") from err
    result["_seconds"] = round(time.perf_counter() - t, 1)
    log(f"{what}: done in {result['_seconds']} s")
    return result


def summarize(done: dict[str, Any], s: Settings, counts: dict[str, dict[str, float]],
              prep: dict[str, Any]) -> dict[str, Any]:
    """One row per (objective, budget) plus the from-scratch baseline: FLOPs, steps, mean +- std of the scores."""
    flops, executed = counts["full"], counts["executed"]
    rows = []
    tokens_per_step = s.batch_size * s.seq_len

    def scores(name: str) -> dict[str, Any]:
        runs = [done[f"finetune/{name}/seed-{seed}"] for seed in s.seeds]
        out = {}
        for metric in ("dev_mcc", "test_mcc", "test_accuracy"):
            out[metric], out[f"{metric}_std"] = _mean_std([r[metric] for r in runs])
        out["seeds"] = runs
        return out

    for k, budget in enumerate(s.budgets):
        for obj in OBJECTIVES:
            run = done[f"pretrain/{obj}-{k}"]
            rows.append({"objective": obj, "budget": k + 1, "flops": run["steps"] * flops[obj],
                         "executed_flops": run["steps"] * executed[obj],
                         "steps": run["steps"], "tokens": run["steps"] * tokens_per_step, "seconds": run["seconds"],
                         "val": run["val"], **scores(f"{obj}-{k}")})
    rows.append({"objective": "none (from scratch)", "budget": 0, "flops": 0.0, "executed_flops": 0.0, "steps": 0,
                 "tokens": 0,
                 "seconds": 0.0, "val": {}, **scores("scratch")})
    return {"settings": dataclasses.asdict(s), "flops_per_step": flops, "executed_flops_per_step": executed,
            "data": prep, "rows": rows}


def results_table(summary: dict[str, Any]) -> str:
    """The markdown table of ``summary`` (docs/pretraining.md carries a copy)."""
    lines = ["| pre-training | budget | FLOPs (full) | FLOPs executed | steps | tokens | minutes | val MLM acc / disc "
             "acc (all-original) | test MCC | dev MCC | test accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        v = r["val"]
        if r["objective"] == "rtd":
            probe = (f"{v.get('mlm_accuracy', float('nan')):.3f} / {v.get('disc_accuracy', float('nan')):.3f} "
                     f"({1 - v.get('replaced_fraction', float('nan')):.3f})")
        elif r["objective"] == "mlm":
            probe = f"{v.get('mlm_accuracy', float('nan')):.3f}"
        else:
            probe = ""
        lines.append(f"| {r['objective']} | {r['budget'] or '-'} | {r['flops']:.3g} | {r['executed_flops']:.3g} | "
                     f"{r['steps']} | {r['tokens']:,} | "
                     f"{r['seconds'] / 60:.1f} | {probe} | {r['test_mcc']:.3f} +- {r['test_mcc_std']:.3f} | "
                     f"{r['dev_mcc']:.3f} +- {r['dev_mcc_std']:.3f} | {r['test_accuracy']:.3f} +- "
                     f"{r['test_accuracy_std']:.3f} |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Test MCC (mean +- std over seeds) against pre-training FLOPs, one line per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for obj, color in (("mlm", "tab:blue"), ("rtd", "tab:orange")):
        rows = [r for r in summary["rows"] if r["objective"] == obj]
        ax.errorbar([r["flops"] for r in rows], [r["test_mcc"] for r in rows], yerr=[r["test_mcc_std"] for r in rows],
                    marker="o", capsize=3, color=color, label=f"{obj} ({'BERT-style' if obj == 'mlm' else 'ELECTRA'})")
    scratch = summary["rows"][-1]
    ax.axhline(scratch["test_mcc"], color="gray", linestyle="--", label="no pre-training")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training FLOPs, full count (generator + discriminator for rtd)")
    ax.set_ylabel("toy acceptability test MCC")
    ax.set_title("MLM vs RTD at equal compute (toy language, 3 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load average at the end {load:.1f}"


__all__ = ["SETTINGS", "Settings", "count_step_flops", "equal_compute", "results_table", "step_flops"]
