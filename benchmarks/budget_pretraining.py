"""Pre-training at equal wall-clock on real text: HF's default BERT recipe vs lmforge's default vs the budget recipe.

    python benchmarks/budget_pretraining.py --work /tmp/budget --minutes 5 --seeds 0 1 2 [--parallel 3]
        [--arms hf default budget budget-hf default-preln budget-b128] [--refdata ../shared/refdata]

The issue's set-up (docs/pretraining.md, "Pre-training on a laptop budget"), at a reduced scale:

* data: a WordPiece tokenizer of 8,000 tokens trained here on WikiText-2 test + tiny-shakespeare + the sentences
  of rows 0-17,999 of SST-2 train_20k.tsv (unlabelled); shards of the same text (2% held out for validation);
  SST-2: rows 0-7,999 (8,000 labelled) to fine-tune on, rows 18,000-19,999 as our own dev set (never pre-trained on).
  Tokenizer + shards are timed and stated separately from the pre-training budget.
* every arm pre-trains a bert-tiny shape (L2 / H128 / A2, vocab 8,000, seq 128, batch 32) for the same
  ``--minutes`` of wall-clock, each in its own process with one thread, ``--parallel`` arms at a time (so arms
  of one round share the machine's load), all planned by lmforge's time budget (lmforge.train.budget):
  - ``hf``: ``BertForMaskedLM`` + ``DataCollatorForLanguageModeling`` (15%), HF's AdamW defaults (eps 1e-8,
    decay off for biases / LayerNorm), lr 1e-3, linear warmup 6% then linear decay (HF's
    ``get_linear_schedule_with_warmup`` formula), clip 1.0, dropout 0.1: the issue's "standard recipe";
  - ``default``: ``lmforge pretrain --model bert-tiny --lr 1e-3 --warmup 0.06`` (the same settings, lmforge);
  - ``budget``: ``--recipe budget`` (recipes/budget.py: pre-LN, no q/k/v/out biases, no dropout, triangle
    one-cycle lr 1e-3, betas 0.9/0.98, clip 0.5, mask 25%);
  - ``budget-hf``: ``--recipe budget-hf`` (the same training, HF-exportable post-LN architecture);
  - ``default-preln``: the default with only pre-LN changed; ``budget-b128``: budget with 128 sequences a step.
* masked-token accuracy of every final model on the same validation masks (15%, fixed seed) against the
  unigram baseline (always the most frequent training token);
* fine-tuning on the 8,000 SST-2 rows (lmforge finetune: 3 epochs, lr 1e-4, batch 32, warmup 0.1, one setting
  for every arm), ``--seeds`` each, and the same from random weights (``scratch``: bert-tiny, post-LN).

Writes WORK/results.json, prints a markdown table with ratios to HF, saves WORK/budget_loss.png (MLM training
loss against minutes). Machine facts and the load average are recorded: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
SEQ, BATCH, LR = 128, 32, 1e-3
ARMS = ("hf", "default", "budget", "budget-hf", "default-preln", "budget-b128")
FT = dict(epochs=3.0, lr=1e-4, batch_size=32, warmup=0.1)


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- data
def prepare_data(work: Path, refdata: Path) -> dict:
    from lmforge import Tokenizer
    from lmforge.data.shards import prepare_shards

    facts: dict = {}
    rows = [line.rstrip("\n").split("\t") for line in
            (refdata / "glue/SST-2/train_20k.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    sst = work / "sst2"
    sst.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", rows[:8000]), ("dev.tsv", rows[18000:20000])):
        (sst / name).write_text("sentence\tlabel\n" + "".join("\t".join(r) + "\n" for r in part), encoding="utf-8")
    sentences = work / "sst2_sentences.txt"
    sentences.write_text("".join(r[0] + "\n" for r in rows[:18000]), encoding="utf-8")
    texts = [refdata / "text/wikitext-2-test.txt", refdata / "text/tinyshakespeare.txt", sentences]
    t = time.time()
    if not (work / "tok" / "tokenizer.json").is_file():
        tok = Tokenizer.train([str(p) for p in texts], kind="wordpiece", vocab_size=8000, show_progress=False)
        tok.save_pretrained(work / "tok")
    facts["tokenizer_s"] = round(time.time() - t, 1)
    t = time.time()
    prepare_shards(texts, tokenizer=Tokenizer.from_pretrained(work / "tok"), out=work / "shards", val_fraction=0.02,
                   progress=False)
    facts["shards_s"] = round(time.time() - t, 1)
    return facts


# ----------------------------------------------------------------------------- pre-training arms
def _lmforge_arm(arm: str, work: Path, seconds: float) -> None:
    from lmforge.recipes.pretrain import pretrain, resolve_config

    given: dict = {"model": "bert-tiny", "data": str(work / "shards"), "out": str(work / "pt" / arm),
                   "time_budget": seconds, "seq_len": SEQ, "batch_size": BATCH, "log_every": 10, "progress": False,
                   "overwrite": True, "val_batches": 10}
    if arm in ("default", "default-preln"):
        given.update(lr=LR, warmup=0.06)
    if arm == "default-preln":
        cfg = work / "bert-tiny-preln.yaml"
        cfg.write_text("preset: bert-tiny\nnorm_placement: pre\n")
        given["model"] = str(cfg)
    if arm.startswith("budget"):
        given["recipe"] = "budget-hf" if arm == "budget-hf" else "budget"
    if arm == "budget-b128":
        given["global_batch_size"] = 4 * BATCH
    pretrain(resolve_config(given))


def _hf_arm(work: Path, seconds: float) -> None:
    """HF's default MLM recipe, planned to the same wall-clock by the same BudgetPlan."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    from lmforge import Tokenizer
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import build_objective
    from lmforge.train.budget import BudgetPlan, Probe

    torch.manual_seed(0)
    out = work / "pt" / "hf"
    out.mkdir(parents=True, exist_ok=True)
    clock = time.monotonic
    plan = BudgetPlan(seconds=seconds, clock=clock)
    plan.start()
    tok = AutoTokenizer.from_pretrained(str(work / "tok"))
    objective = build_objective("mlm", tokenizer=Tokenizer.from_pretrained(work / "tok"), seq_len=SEQ)
    seqs = objective.examples(ShardDataset(work / "shards", "train"))  # the same packed sequences lmforge trains on
    n = len(seqs.ranges)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=512, max_position_embeddings=512,
                                       pad_token_id=tok.pad_token_id))
    decay = [p for nm, p in model.named_parameters() if not (nm.endswith("bias") or "LayerNorm" in nm)]
    rest = [p for nm, p in model.named_parameters() if nm.endswith("bias") or "LayerNorm" in nm]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(0)
    order: list[int] = []

    def batch(i: int):
        while len(order) < (i + 1) * BATCH:
            order.extend(rng.permutation(n).tolist())
        return collator([{"input_ids": seqs.sequence(j).tolist()} for j in order[i * BATCH:(i + 1) * BATCH]])

    def train_step(i: int, lr: float) -> float:
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(**batch(i)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    def lr_at(step: int, total: int) -> float:  # transformers optimization.py _get_linear_schedule_with_warmup_lr_lambda
        warm = int(0.06 * total)
        if step < warm:
            return LR * step / max(1, warm)
        return LR * max(0.0, (total - step) / max(1, total - warm))

    model.train()
    t = clock()
    model(**batch(0)).loss.backward()
    opt.zero_grad(set_to_none=True)
    step_t = clock() - t
    t = clock()
    model.save_pretrained(out)
    save_t = clock() - t
    plan.check_fits(Probe(step=step_t, save=save_t))
    total = plan.first(0, Probe(step=step_t, save=save_t), checkpoint_at_end=False)
    records, losses, step = [], [], 0
    while step < total:
        losses.append(train_step(step, lr_at(step, total)))
        step += 1
        total = plan.revise(step) or total
        if step % 10 == 0 or step == total:
            records.append({"split": "train", "step": step, "loss": sum(losses) / len(losses),
                            "elapsed_s": round(plan.used(), 2), "lr": lr_at(step - 1, total)})
            losses = []
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"hf: {step} steps in {plan.used():.1f}s of {seconds:.0f}s", flush=True)


# ----------------------------------------------------------------------------- evaluation
def mlm_eval(work: Path, arm: str, batches: int = 16, path: Path | None = None) -> dict:
    """Masked-token accuracy and loss on the same validation masks (15%, seed 1234) for every arm."""
    import numpy as np
    import torch

    from lmforge import Tokenizer
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import build_objective
    from lmforge.objectives.base import BatchSource

    tok = Tokenizer.from_pretrained(work / "tok")
    objective = build_objective("mlm", tokenizer=tok, seq_len=SEQ)
    source = BatchSource(objective, ShardDataset(work / "shards", "val"), batch_size=BATCH, seed=1234, shuffle=False)
    path = path or work / "pt" / arm
    if arm == "hf":
        from transformers import BertForMaskedLM

        model, hf = BertForMaskedLM.from_pretrained(str(path)), True
    else:
        from lmforge import Model

        model, hf = Model.from_pretrained(path), False
    model.eval()
    hits = n = 0
    nll = 0.0
    with torch.no_grad():
        for i in range(min(batches, source.steps_per_epoch)):
            b = source.batch(0, i)
            keep = b["labels"] != -100
            if hf:
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[keep]
            else:
                logits = model(b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).logits
                logits = logits if logits.dim() == 2 else logits[keep]
            target = b["labels"][keep]
            hits += int((logits.argmax(-1) == target).sum())
            nll += float(torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum"))
            n += int(target.numel())
    # the unigram baseline on the same masked targets: always the most frequent training token (no specials)
    train = ShardDataset(work / "shards", "train")
    counts = np.bincount(train.tokens(0, train.num_tokens).astype(np.int64), minlength=len(tok)).astype(np.float64)
    top = int(counts.argmax())
    probs = (counts + 1) / (counts + 1).sum()
    uni_hits = uni_nll = 0.0
    for i in range(min(batches, source.steps_per_epoch)):
        b = source.batch(0, i)
        target = b["labels"][b["labels"] != -100].numpy()
        uni_hits += float((target == top).sum())
        uni_nll += float(-np.log(probs[target]).sum())
    return {"mlm_accuracy": hits / n, "mlm_loss": nll / n, "unigram_accuracy": uni_hits / n,
            "unigram_loss": uni_nll / n, "masked_tokens": n}


def finetune_arm(work: Path, arm: str, seed: int) -> dict:
    from lmforge.recipes.finetune import FinetuneConfig, finetune

    model = work / "pt" / ("default" if arm == "scratch" else arm)
    out = work / "ft" / f"{arm}-s{seed}"
    cfg = FinetuneConfig(model=str(model), task="glue-sst2", data=str(work / "sst2"), out=str(out), seed=seed,
                         from_scratch=arm == "scratch", progress=False, overwrite=True, **FT)
    t = time.time()
    metrics = finetune(cfg, log=lambda m: None)
    return {"arm": arm, "seed": seed, "accuracy": metrics.get("accuracy"), "seconds": round(time.time() - t, 1)}


# ----------------------------------------------------------------------------- driver
def _spawn(args: list[str], script: Path = HERE) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _pool(jobs: list[list[str]], parallel: int, log: Path, script: Path = HERE) -> list[str]:
    """Run ``script`` once per job (its arguments), ``parallel`` at a time; returns each run's output."""
    outs, running, queue = [], [], list(jobs)
    with open(log, "a", encoding="utf-8") as fh:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.pop(0)
                running.append((job, _spawn(job, script)))
            time.sleep(1)
            for item in list(running):
                job, proc = item
                if proc.poll() is not None:
                    text = proc.stdout.read()
                    fh.write(f"$ {' '.join(job)} -> {proc.returncode}\n{text}\n")
                    fh.flush()
                    if proc.returncode:
                        print(f"FAILED {' '.join(job)}:\n{text[-3000:]}", flush=True)
                    outs.append(text)
                    running.remove(item)
    return outs


def machine() -> dict:
    import platform

    import torch
    import transformers

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpu if line.startswith("Model name")), platform.processor())
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu": model, "cores": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
            "transformers": transformers.__version__}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def report(work: Path) -> None:
    res = json.loads((work / "results.json").read_text())
    ft: dict[str, list[float]] = {}
    for r in res["finetune"]:
        if r.get("accuracy") is not None:
            ft.setdefault(r["arm"], []).append(r["accuracy"])
    hf_loss = res["mlm"].get("hf", {}).get("mlm_loss")
    print(f"machine: {res['machine']}; data: {res['data']}")
    print("| arm | steps | MLM loss (val) | masked-token acc. | unigram acc. | loss / HF | SST-2 dev acc. (mean ± sd, n) |")
    print("|---|---|---|---|---|---|---|")
    for arm in [*res["arms"], "scratch"]:
        m = res["mlm"].get(arm, {})
        acc = ft.get(arm, [])
        mean, sd = _mean_std(acc) if acc else (float("nan"), 0.0)
        loss = m.get("mlm_loss")
        ratio = f"{loss / hf_loss:.3f}" if loss and hf_loss else "-"
        print(f"| {arm} | {res['steps'].get(arm, '-')} | {loss if loss is None else round(loss, 3)} | "
              f"{m.get('mlm_accuracy', float('nan')):.3f} | {m.get('unigram_accuracy', float('nan')):.3f} | {ratio} | "
              f"{mean:.4f} ± {sd:.4f} ({len(acc)}) |")
    _plot(work, res["arms"])


def _plot(work: Path, arms: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in arms:
        path = work / "pt" / arm / "metrics.jsonl"
        if not path.is_file():
            continue
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        pts = [(r["elapsed_s"] / 60, r["loss"]) for r in recs if r.get("split") == "train" and "elapsed_s" in r]
        if pts:
            ax.plot(*zip(*pts), label=arm)
    ax.set_xlabel("wall-clock minutes (1 thread)")
    ax.set_ylabel("MLM training loss (each arm's own masking)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(work / "budget_loss.png", dpi=110)
    print(f"wrote {work / 'budget_loss.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmforge-budget"))
    ap.add_argument("--refdata", type=Path, default=REPO.parent / "shared" / "refdata")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--ft-epochs", type=float, default=FT["epochs"], help="fine-tuning epochs (a smoke test: 0.05)")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-scratch fine-tuning (it does not depend "
                    "on pre-training: reuse another run's)")
    ap.add_argument("--skip-pretrain", action="store_true", help="reuse WORK/pt (evaluate and fine-tune again)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--pretrain-only", action="store_true", help="pre-train and evaluate the MLM, write "
                    "WORK/pretrain.json, no fine-tuning (fine-tune later with --skip-pretrain)")
    ap.add_argument("--ft-lr", type=float, default=FT["lr"], help="fine-tuning learning rate")
    ap.add_argument("_job", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    FT["epochs"], FT["lr"] = args.ft_epochs, args.ft_lr
    if args._job:  # a worker process
        _threads()
        kind, arm = args._job[0], args._job[1]
        if kind == "pretrain":
            _hf_arm(args.work, args.minutes * 60) if arm == "hf" else _lmforge_arm(arm, args.work, args.minutes * 60)
        elif kind == "eval":
            print("RESULT " + json.dumps({"arm": arm, **mlm_eval(args.work, arm)}))
        elif kind == "finetune":
            print("RESULT " + json.dumps(finetune_arm(args.work, arm, int(args._job[2]))))
        return
    if args.report_only:
        report(args.work)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    res = {"machine_before": machine(), "arms": args.arms, "minutes": args.minutes, "finetune_settings": FT}
    res["data"] = prepare_data(args.work, args.refdata)
    common = ["--work", str(args.work), "--minutes", str(args.minutes), "--ft-epochs", str(args.ft_epochs),
              "--ft-lr", str(args.ft_lr)]
    saved = args.work / "pretrain.json"
    if not args.skip_pretrain:
        _pool([[*common, "pretrain", a] for a in args.arms], args.parallel, log)
        res["machine_after_pretrain"] = machine()
    elif saved.is_file():  # the pre-training phase's own record (load before / after it)
        res.update({k: v for k, v in json.loads(saved.read_text()).items() if k not in ("finetune_settings", "data")})
    res["steps"] = {}
    for a in args.arms:
        state = args.work / "pt" / a / "trainer_state.json"
        if state.is_file():
            res["steps"][a] = json.loads(state.read_text())["step"]
        elif (args.work / "pt" / a / "metrics.jsonl").is_file():
            res["steps"][a] = json.loads((args.work / "pt" / a / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    outs = _pool([[*common, "eval", a] for a in args.arms], args.parallel, log)
    res["mlm"] = {r["arm"]: r for r in (json.loads(line[7:]) for o in outs for line in o.splitlines()
                                        if line.startswith("RESULT "))}
    if args.pretrain_only:
        saved.write_text(json.dumps(res, indent=2))
        print(json.dumps({"steps": res["steps"], "mlm": res["mlm"]}, indent=1))
        return
    scratch = [] if args.no_scratch else ["scratch"]
    jobs = [[*common, "finetune", a, str(s)] for s in args.seeds for a in [*args.arms, *scratch]]
    outs = _pool(jobs, args.parallel, log)
    res["finetune"] = [json.loads(line[7:]) for o in outs for line in o.splitlines() if line.startswith("RESULT ")]
    res["machine"] = machine()
    (args.work / "results.json").write_text(json.dumps(res, indent=2))
    report(args.work)


if __name__ == "__main__":
    main()
