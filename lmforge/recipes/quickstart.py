"""`lmforge quickstart`: the whole pipeline on the built-in toy language, offline, in minutes.

Stages (each one calls the library code of its area; none is re-implemented here):

  data         lmforge.data.toyland.generate        corpus + tasks in official formats, and the GPT's corpus
                                                    (the same stories, 70% natural demonstrations: toyland/demos.py)
  tokenizers   Tokenizer.train                       WordPiece (for BERT) and byte-level BPE (for GPT)
  shards       lmforge.data.shards.prepare_shards    memory-mapped token shards, one set per tokenizer
  bert         lmforge.recipes.pretrain.pretrain     a tiny BERT (mlm+nsp)
  cola         lmforge.recipes.finetune.finetune     acceptability from the pre-trained BERT and from scratch
  squad        lmforge.recipes.finetune.finetune     span QA from the pre-trained BERT
  gpt          lmforge.recipes.pretrain.pretrain     a tiny GPT (clm)
  generation   lmforge.generation.generate           a continuation of a story opening by the GPT
  fewshot      lmforge.prompting.demos               k = 0, 1, 4 on the sentiment task, task named / neutral
  report       results.json, results table, report.md with the PNGs of every stage

A stage writes ``.quickstart/state.json`` when it is done, so an interrupted run started again with the
same command continues after the last finished stage; the unfinished stage's folder is removed and
that stage starts over (no half-written output is reused).
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
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

STATE_DIR = ".quickstart"
STATE_FILE = "state.json"
STATE_VERSION = 2  # 2: the GPT's own corpus (data/gpt-corpus) and the two-format few-shot rows


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one quickstart flavour (the default run, or --fast)."""

    name: str
    docs: int  # corpus stories
    examples: int  # training examples per task (dev / test get half as many)
    wordpiece_vocab: int
    bpe_vocab: int
    seq_len: int
    batch_size: int
    bert_steps: int
    bert_lr: float
    bert_dropout: float  # hidden and attention dropout of the tiny BERT (kept when it is fine-tuned)
    gpt_steps: int
    gpt_lr: float
    gpt_seq_len: int  # GPT's window: room for 4 shots and the query in the few-shot stage
    gpt_batch_size: int
    cola_epochs: float
    cola_lr: float
    cola_batch_size: int
    cola_seeds: tuple[int, ...]  # fine-tuning seeds per model: the table shows their mean (and std)
    squad_epochs: float
    squad_lr: float
    squad_batch_size: int
    fewshot_limit: int  # sentiment dev examples scored per k
    generate_tokens: int


SETTINGS: dict[str, Settings] = {
    # default: under 10 minutes on 2 idle CPU cores, most of it BERT pre-training (the acceptability gain
    # needs it); BERT lr 2e-3 transfers better than 1e-3. Measurements: docs/quickstart.md
    "default": Settings("default", docs=24000, examples=1000, wordpiece_vocab=1000, bpe_vocab=800, seq_len=64,
                        batch_size=32, bert_steps=5000, bert_lr=2e-3, bert_dropout=0.0, gpt_steps=1200, gpt_lr=2e-3,
                        gpt_seq_len=128, gpt_batch_size=16, cola_epochs=10, cola_lr=3e-4, cola_batch_size=16,
                        cola_seeds=(0, 1, 2), squad_epochs=4,
                        squad_lr=1e-3, squad_batch_size=16,
                        fewshot_limit=200, generate_tokens=40),
    "fast": Settings("fast", docs=400, examples=80, wordpiece_vocab=600, bpe_vocab=400, seq_len=64,
                     batch_size=16, bert_steps=30, bert_lr=1e-3, bert_dropout=0.0, gpt_steps=20, gpt_lr=1e-3,
                     gpt_seq_len=128, gpt_batch_size=8, cola_epochs=1, cola_lr=3e-4, cola_batch_size=16,
                     cola_seeds=(0, 1), squad_epochs=1, squad_lr=3e-4,
                     squad_batch_size=16,
                     fewshot_limit=16, generate_tokens=16),
}

# the paths quickstart writes under OUT (--overwrite removes exactly these, nothing else)
OUTPUTS = ("data", "tokenizers", "shards", "models", "finetune", "generation", "fewshot", "logs",
           "report.md", "results.json", "cola_mcc.png", STATE_DIR)

Log = Callable[[str], None]
PROMPT = "Ada is a small red fox. Ada lives in the forest."


# ------------------------------------------------------------------ run state
class Run:
    """The output directory, the settings, and which stages are done (``.quickstart/state.json``)."""

    def __init__(self, out: Path, settings: Settings, log: Log) -> None:
        self.out, self.settings, self.log = out, settings, log
        self.state_path = out / STATE_DIR / STATE_FILE
        self.state: dict[str, Any] = {"version": STATE_VERSION, "settings": settings.name, "done": {}}
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())

    @property
    def done(self) -> dict[str, Any]:
        return self.state["done"]

    def mark(self, stage: str, result: dict[str, Any]) -> None:
        self.done[stage] = result
        self.save()

    def save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.state_path)  # atomic: a kill never leaves half a state file

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def _check_out(out: Path, settings: Settings, *, overwrite: bool) -> str:
    """'fresh', 'resume' or 'overwrite'; refuses a non-empty directory that is not ours to continue."""
    from lmforge.recipes.outputs import check_out_dir

    empty = not (out.is_dir() and any(out.iterdir()))
    if overwrite or empty:
        check_out_dir(out, overwrite=overwrite, owned=OUTPUTS)  # --overwrite removes exactly quickstart's outputs
        return "fresh" if empty else "overwrite"
    state_path = out / STATE_DIR / STATE_FILE
    if not state_path.is_file():
        check_out_dir(out)  # not ours to continue: the one-line refusal every command gives
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError:
        raise LmforgeError(f"{state_path} is unreadable; pass --overwrite to start over") from None
    if state.get("version") != STATE_VERSION:
        raise LmforgeError(f"{out} holds a quickstart run of another lmforge version (state version "
                           f"{state.get('version')}, this one writes {STATE_VERSION}); pass --overwrite to start over")
    if state.get("settings") != settings.name:
        raise LmforgeError(f"{out} holds a quickstart run with other settings ({state.get('settings')}); "
                           "pass --overwrite to start over, or use the same flags to continue it")
    if "report" in state.get("done", {}):
        raise LmforgeError(f"{out} already holds a finished quickstart run (see {out / 'report.md'}); "
                           "pass --overwrite to run it again")
    return "resume"


@contextlib.contextmanager
def _captured(log_file: Path):
    """Send the stage's own prints (progress lines, per-epoch scores) to its log file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield f


# ------------------------------------------------------------------ stages
def stage_data(run: Run) -> dict[str, Any]:
    from lmforge.data.toyland import generate
    from lmforge.data.toyland.demos import FEWSHOT_KINDS, FEWSHOT_SHARE, write_demo_corpus

    s = run.settings
    files = generate(run.path("data"), docs=s.docs, examples=s.examples, seed=0)
    corpus = files[0]
    gpt_corpus = run.path("data", "gpt-corpus", "train.txt")
    gpt_corpus.parent.mkdir(parents=True, exist_ok=True)
    # the GPT's corpus: the same stories, 70% of the documents natural demonstrations (`lmforge lab fewshot`'s mix),
    # so that its few-shot stage has something to show; the BERT stages keep the plain corpus
    demos = write_demo_corpus(gpt_corpus, docs=s.docs, seed=0, share=FEWSHOT_SHARE, kinds=FEWSHOT_KINDS)
    return {"corpus_docs": corpus.count, "corpus_mb": round(corpus.mb, 2), "files": len(files),
            "total_mb": round(sum(f.mb for f in files), 2), "gpt_corpus_demonstrations": demos}


def _corpus(run: Run, name: str) -> Path:
    """The corpus a tokenizer / shard set is made from: BERT's (wordpiece) or GPT's (bpe, with demonstrations)."""
    return run.path("data", "gpt-corpus" if name == "bpe" else "corpus", "train.txt")


def stage_tokenizers(run: Run) -> dict[str, Any]:
    from lmforge.tokenization.tokenizer import Tokenizer

    result = {}
    for name, kind, vocab in (("wordpiece", "wordpiece", run.settings.wordpiece_vocab),
                              ("bpe", "bpe", run.settings.bpe_vocab)):
        tok = Tokenizer.train([str(_corpus(run, name))], kind=kind, vocab_size=vocab, show_progress=False,
                                      log=lambda m: print(m))
        tok.save_pretrained(run.path("tokenizers", name))
        result[f"{name}_vocab"] = len(tok)
    return result


def stage_shards(run: Run) -> dict[str, Any]:
    from lmforge.data.shards import prepare_shards
    from lmforge.tokenization.tokenizer import Tokenizer

    result = {}
    for name in ("wordpiece", "bpe"):
        tok = Tokenizer.from_pretrained(run.path("tokenizers", name))
        r = prepare_shards([_corpus(run, name)], tokenizer=tok, out=run.path("shards", name), val_fraction=0.02,
                                  progress=False)
        result[f"{name}_train_tokens"] = r.meta["splits"]["train"]["tokens"]
    return result


def _pretrain_summary(out: Path) -> dict[str, Any]:
    from lmforge.train.logging import read_metrics

    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    if not train:
        raise LmforgeError(f"{out / 'metrics.jsonl'} has no training records; see the stage log")
    # each record's rate covers the steps since the previous record; every step has the same number of
    # tokens, so the run's rate is the step-weighted harmonic mean (an arithmetic mean of the rates
    # overstates it badly when a few windows were slow, e.g. on a shared machine)
    steps_and_rates = [(r["step"] - prev["step"], r["tokens_per_s"])
                       for prev, r in zip([{"step": 0}, *train], train) if r.get("tokens_per_s")]
    steps = sum(n for n, _ in steps_and_rates)
    seconds_per_token = sum(n / rate for n, rate in steps_and_rates)
    return {"steps": train[-1]["step"], "first_loss": round(train[0]["loss"], 4), "final_loss": round(train[-1]["loss"], 4),
            "val": {k: v for k, v in (val[-1] if val else {}).items() if k not in ("split", "step")},
            "tokens_per_s": round(steps / seconds_per_token, 1) if steps_and_rates else None}


def _pretrain(run: Run, *, model: dict[str, Any], name: str, objective: str, shards: str, steps: int,
              lr: float, seq_len: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Pre-train ``model`` (a ModelConfig mapping, saved as models/NAME-tiny.json) into models/NAME."""
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train.config import TrainConfig

    s = run.settings
    out = run.path("models", name)
    config = run.path("models", f"{name}-tiny.json")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(model, indent=1) + "\n")
    train = TrainConfig(max_steps=steps, batch_size=batch_size or s.batch_size, seq_len=seq_len or s.seq_len, lr=lr,
                        warmup_ratio=0.06,
                        save_every=max(steps // 2, 1), keep=1, log_every=max(1, steps // 50), seed=0, progress=False)
    pretrain(PretrainConfig(model=str(config), objective=objective, data=str(run.path("shards", shards)),
                            out=str(out), val_batches=10, device="cpu", train=train))
    return _pretrain_summary(out)


def stage_bert(run: Run) -> dict[str, Any]:
    s = run.settings
    # bert-tiny (2 layers, H=128) without dropout: a few minutes of pre-training cannot over-fit the
    # toy corpus, and on a CPU dropout makes every step slower and learning slower
    model = {"preset": "bert-tiny", "hidden_dropout": s.bert_dropout, "attention_dropout": s.bert_dropout}
    return _pretrain(run, model=model, name="bert", objective="mlm+nsp", shards="wordpiece", steps=s.bert_steps,
                     lr=s.bert_lr)


def stage_gpt(run: Run) -> dict[str, Any]:
    s = run.settings
    # a tiny GPT-2: the gpt2 preset's family and conventions at bert-tiny's size; 128-token windows (BERT's 64 hold
    # no few-shot prompt: positions past the training window are untrained), the same tokens per step as BERT's.
    # 1200 steps at lr 2e-3 without dropout: after 600 at 1e-3 with dropout 0.1 it told the task from the shots but
    # its verdicts were at chance (task-neutral k = 0 / 1 / 4: 0.010 / 0.490 / 0.465), also after 1200 at 2e-3 with
    # dropout (0.000 / 0.565 / 0.515); without: see docs/quickstart.md (2026-12-04)
    model = {"preset": "gpt2", "num_layers": 2, "hidden_size": 128, "num_heads": 2, "intermediate_size": 512,
             "max_positions": 256, "hidden_dropout": 0.0, "attention_dropout": 0.0}  # no dropout: as BERT's, above
    return _pretrain(run, model=model, name="gpt", objective="clm", shards="bpe", steps=s.gpt_steps, lr=s.gpt_lr,
                     seq_len=s.gpt_seq_len, batch_size=s.gpt_batch_size)


def _finetune(run: Run, *, task: str, data: str, out: str, epochs: float, lr: float, scratch: bool = False,
              max_length: int | None = None, batch_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    from lmforge.recipes.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(model=str(run.path("models", "bert")), task=task, data=str(run.path("data", data)),
                               out=str(run.path("finetune", out)), from_scratch=scratch, epochs=epochs, lr=lr,
                               batch_size=batch_size or run.settings.batch_size, max_length=max_length, seed=seed,
                               device="cpu", progress=False)
    scores = finetune(config, log=lambda m: print(m))
    return {k: round(float(v), 4) for k, v in scores.items() if isinstance(v, (int, float))}


def accuracy_by_source(cola_file: Path, predictions_file: Path) -> dict[str, dict[str, float]]:
    """Dev accuracy per CoLA source column (toyland names the corruption there: tl_ok, tl_agr ...).

    ``predictions_file`` is fine-tuning's predictions.tsv (header ``index<TAB>prediction``; the index is
    the row number of ``cola_file``, the prediction a label name).
    """
    rows = [line.split("\t") for line in cola_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    predicted = {}
    for line in predictions_file.read_text(encoding="utf-8").splitlines()[1:]:
        index, label = line.split("\t")
        predicted[int(index)] = label
    if len(predicted) != len(rows):
        raise LmforgeError(f"{predictions_file} has {len(predicted)} predictions for the {len(rows)} rows of {cola_file}")
    by: dict[str, list[bool]] = {}
    for i, fields in enumerate(rows):
        by.setdefault(fields[0], []).append(predicted[i] == fields[1])
    return {source: {"n": len(hits), "accuracy": round(sum(hits) / len(hits), 4)} for source, hits in sorted(by.items())}


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return round(statistics.mean(values), 4), round(statistics.stdev(values) if len(values) > 1 else 0.0, 4)


def _mean_by_source(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {source: {"n": runs[0][source]["n"],
                     "accuracy": round(sum(r[source]["accuracy"] for r in runs) / len(runs), 4)}
            for source in runs[0]}


def stage_cola(run: Run) -> dict[str, Any]:
    """Fine-tune on acceptability from the pre-trained BERT and from scratch, once per seed in
    ``cola_seeds``; score every run on dev (which picks its best epoch) and on the held-out test split,
    overall and per corruption type. The table reports the means over seeds: one run's MCC on 500
    sentences moves by a few hundredths with the seed, as on real CoLA."""
    from lmforge.recipes.finetune import evaluate_dir

    s = run.settings
    data = run.path("data", "cola")
    result: dict[str, Any] = {}
    # same architecture, same data, same schedule, same seeds: only the starting weights differ
    for name, scratch in (("pretrained", False), ("scratch", True)):
        runs = []
        for seed in s.cola_seeds:
            rel = f"cola-{name}/seed-{seed}"
            out = run.path("finetune", rel)
            scores = _finetune(run, task="glue-cola", data="cola", out=rel, epochs=s.cola_epochs, lr=s.cola_lr,
                               scratch=scratch, max_length=64, batch_size=s.cola_batch_size, seed=seed)
            scores["by_source"] = accuracy_by_source(data / "dev.tsv", out / "predictions.tsv")
            test = evaluate_dir(str(out), task=None, data=str(data), split="test", out=str(out / "test"),
                                   device="cpu", log=lambda m: print(m))
            scores["test"] = {k: round(float(v), 4) for k, v in test.items()}
            scores["test"]["by_source"] = accuracy_by_source(data / "test.tsv", out / "test" / "predictions.tsv")
            scores["seed"] = seed
            runs.append(scores)
        dev_mean, dev_std = _mean_std([r["mcc"] for r in runs])
        test_mean, test_std = _mean_std([r["test"]["mcc"] for r in runs])
        result[name] = {"mcc": dev_mean, "mcc_std": dev_std, "by_source": _mean_by_source([r["by_source"] for r in runs]),
                        "test": {"mcc": test_mean, "mcc_std": test_std,
                                 "by_source": _mean_by_source([r["test"]["by_source"] for r in runs])},
                        "seeds": runs}
    result["mcc_gain"] = round(result["pretrained"]["test"]["mcc"] - result["scratch"]["test"]["mcc"], 4)
    result["dev_mcc_gain"] = round(result["pretrained"]["mcc"] - result["scratch"]["mcc"], 4)
    return result


def stage_squad(run: Run) -> dict[str, Any]:
    s = run.settings
    return _finetune(run, task="squad", data="squad", out="squad", epochs=s.squad_epochs, lr=s.squad_lr,
                     max_length=192, batch_size=s.squad_batch_size)


def _load_gpt(run: Run) -> tuple[Any, Any]:
    from lmforge.models.model import Model
    from lmforge.tokenization.tokenizer import Tokenizer

    model = Model.from_pretrained(run.path("models", "gpt"))
    model.eval()
    return model, Tokenizer.from_pretrained(run.path("models", "gpt"))


def stage_generation(run: Run) -> dict[str, Any]:
    import torch

    from lmforge.generation import generate

    model, tok = _load_gpt(run)
    ids = torch.tensor([tok(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        new = generate(model, ids, max_new_tokens=run.settings.generate_tokens, do_sample=False,
                       return_prompt=False)
    text = tok.decode(new[0].tolist(), skip_special_tokens=True)
    out = run.path("generation")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sample.txt").write_text(f"{PROMPT}{text}\n")
    return {"prompt": PROMPT, "continuation": text}


FEWSHOT_K = (0, 1, 4)


def stage_fewshot(run: Run) -> dict[str, Any]:
    """k-shot sentiment in the two prompt formats of `lmforge lab fewshot` (lmforge/prompting/demos.py): the task named
    ("Review: ... Sentiment:", the higher of the two verdicts) and task-neutral ("Input: ... Output:", the right
    verdict above all six answer words of the corpus's three io tasks: the shots are what says the task)."""
    import torch

    from lmforge.prompting.demos import named_accuracy, neutral_accuracy
    from lmforge.tasks import get_task

    model, tok = _load_gpt(run)
    task, data, n = get_task("glue-sst2"), run.path("data", "sst2"), run.settings.fewshot_limit
    examples, pool = task.read(data, "dev")[:n], task.read(data, "train")
    rows = []
    with torch.no_grad():
        for k in FEWSHOT_K:
            neutral, verdicts, _ = neutral_accuracy(model, tok, examples, pool, k, seed=0)
            named, _ = named_accuracy(model, tok, examples, pool, k, seed=0)
            rows.append({"k": k, "n": len(examples), "named": round(named, 4), "neutral": round(neutral, 4),
                         "neutral_verdict_share": round(verdicts, 4)})
    labels = [int(ex["label"]) for ex in examples]
    majority = max(labels.count(v) for v in set(labels)) / len(labels)  # always the most frequent label, for scale
    out = run.path("fewshot")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "majority": majority}, indent=1) + "\n")
    _plot_fewshot(rows, majority, out / "fewshot.png")
    return {"rows": rows, "majority": round(majority, 4)}


def _plot_fewshot(rows: list[dict[str, Any]], majority: float, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ks = [r["k"] for r in rows]
    ax.plot(range(len(ks)), [r["neutral"] for r in rows], marker="o", label="task-neutral (Input: / Output:)")
    ax.plot(range(len(ks)), [r["named"] for r in rows], marker="o", ls="--", label="task named (Review: / Sentiment:)")
    ax.axhline(majority, color="grey", ls=":", label="always the majority verdict")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("k (demonstrations in the prompt)")
    ax.set_ylabel(f"accuracy ({rows[0]['n']} dev sentences)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


STAGES: dict[str, tuple[str, Callable[[Run], dict[str, Any]], tuple[str, ...]]] = {
    # name: (what the user reads, function, folders it writes: removed before a restart of the stage)
    "data": ("toy data", stage_data, ("data",)),
    "tokenizers": ("WordPiece + byte-level BPE tokenizers", stage_tokenizers, ("tokenizers",)),
    "shards": ("token shards", stage_shards, ("shards",)),
    "bert": ("pre-train tiny BERT (mlm+nsp)", stage_bert, ("models/bert", "models/bert-tiny.json")),
    "cola": ("fine-tune acceptability: pre-trained vs scratch", stage_cola,
             ("finetune/cola-pretrained", "finetune/cola-scratch")),
    "squad": ("fine-tune span QA", stage_squad, ("finetune/squad",)),
    "gpt": ("pre-train tiny GPT (clm)", stage_gpt, ("models/gpt", "models/gpt-tiny.json")),
    "generation": ("GPT continuation", stage_generation, ("generation",)),
    "fewshot": ("GPT few-shot sentiment (k = 0, 1, 4)", stage_fewshot, ("fewshot",)),
}


# ------------------------------------------------------------------ report
# toyland's CoLA source column, in the order the report lists them
_SOURCE_NAMES = {"tl_ok": "grammatical", "tl_agr": "verb agreement", "tl_det": "determiner",
                 "tl_ord": "swapped words", "tl_mis": "missing word"}


def results_table(done: dict[str, Any]) -> str:
    """The summary table (plain text, also pasted into report.md)."""
    lines = [f"{'what':42s} {'result'}", f"{'-' * 42} {'-' * 36}"]

    def row(what: str, result: str) -> None:
        lines.append(f"{what:42s} {result}")

    if "bert" in done:
        b = done["bert"]
        row("tiny BERT mlm+nsp pre-training", f"{b['steps']} steps, loss {b['first_loss']} -> {b['final_loss']}, "
            f"{b['tokens_per_s']} tokens/s")
    if "gpt" in done:
        g = done["gpt"]
        row("tiny GPT clm pre-training", f"{g['steps']} steps, loss {g['first_loss']} -> {g['final_loss']}, "
            f"{g['tokens_per_s']} tokens/s")
    if "cola" in done:
        c = done["cola"]
        pre, scratch = c["pretrained"], c["scratch"]
        # test: held out (dev picked each run's best epoch, so its scores lean optimistic)
        n = len(pre.get("seeds", [None]))
        seeds = f", mean of {n} seeds" if n > 1 else ""
        for label, r in (("pre-trained BERT", pre), ("BERT from scratch", scratch)):
            spread = f" +- {r['test']['mcc_std']:.3f}" if n > 1 else ""
            row(f"acceptability test MCC, {label}", f"{r['test']['mcc']:.3f}{spread} (dev {r['mcc']:.3f}{seeds})")
        row("gain from pre-training", f"{c['mcc_gain']:+.3f} test MCC ({c['dev_mcc_gain']:+.3f} dev)")
        # toyland's CoLA source column names the corruption: where each model is right
        by_source = pre["test"]["by_source"]
        for source in sorted(by_source, key=lambda k: list(_SOURCE_NAMES).index(k) if k in _SOURCE_NAMES else 99):
            p = by_source[source]
            other = scratch["test"]["by_source"].get(source, {}).get("accuracy", float("nan"))
            row(f"  test accuracy, {_SOURCE_NAMES.get(source, source)}",
                f"{p['accuracy']:.3f} pre-trained, {other:.3f} scratch (n={p['n']})")
    if "squad" in done:
        q = done["squad"]
        row("span QA (SQuAD v1.1 format) EM / F1", f"{q.get('exact', float('nan')):.1f} / {q.get('f1', float('nan')):.1f}")
    if "fewshot" in done:
        for r in done["fewshot"]["rows"]:
            row(f"GPT few-shot sentiment, k={r['k']}", f"{r['neutral']:.3f} task-neutral "
                f"({r['neutral_verdict_share']:.0%} verdicts), {r['named']:.3f} task named, n={r['n']}")
        row("  always the most frequent label", f"{done['fewshot']['majority']:.3f}")
    return "\n".join(lines)


def _plot_cola(run: Run) -> Path | None:
    c = run.done.get("cola")
    if not c:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    values = [c["pretrained"]["test"]["mcc"], c["scratch"]["test"]["mcc"]]
    ax.bar(["pre-trained", "scratch"], values, color=["tab:blue", "tab:gray"])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set_ylabel("test MCC")
    ax.set_title("toy acceptability (CoLA format)")
    fig.tight_layout()
    path = run.path("cola_mcc.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(run: Run, *, wall_s: float) -> dict[str, Any]:
    done = run.done
    table = results_table(done)
    first = run.settings.cola_seeds[0]
    images = [("pre-training loss, BERT", "models/bert/loss.png"), ("pre-training loss, GPT", "models/gpt/loss.png"),
              ("acceptability MCC, pre-trained vs scratch", "cola_mcc.png"),
              ("confusion matrix, pre-trained (first seed)", f"finetune/cola-pretrained/seed-{first}/confusion_matrix.png"),
              ("confusion matrix, scratch (first seed)", f"finetune/cola-scratch/seed-{first}/confusion_matrix.png"),
              ("few-shot accuracy by k", "fewshot/fewshot.png")]
    _plot_cola(run)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # the load tells a reader whether other work shared the cores (timings are then slower than usual)
    load = ", load average {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {_threads()}{load}"
    md = [f"# lmforge quickstart report ({run.settings.name} run)", "",
          f"{when}; {machine}; total time of this invocation {wall_s / 60:.1f} min.", "",
          "Everything below was trained in this run on the built-in toy language (`lmforge toydata`).", "",
          "```", table, "```", ""]
    if "generation" in done:
        md += ["## GPT continuation (greedy)", "", f"> **{done['generation']['prompt']}**{done['generation']['continuation']}", ""]
    if "data" in done:
        d = done["data"]
        demos = d.get("gpt_corpus_demonstrations")
        gpt = (f" The GPT learns from `data/gpt-corpus/train.txt`: as many documents, {demos:,} of them natural "
               "demonstrations (reviews with a verdict, task-neutral Input / Output runs, stories with Q: / A:)."
               if demos is not None else "")
        md += ["## Data", "", f"{d['corpus_docs']:,} stories ({d['corpus_mb']} MB) in `data/corpus/train.txt`; "
               f"tasks in `data/` ({d['total_mb']} MB in all).{gpt}", ""]
    md += ["## Plots", ""]
    md += [f"### {title}\n\n![{title}]({rel})\n" for title, rel in images if run.path(rel).is_file()]
    md += ["## Stage times", "", "| stage | seconds | torch threads |", "|---|---|---|"]
    md += [f"| {name} | {done[name].get('_seconds', '')} | {done[name].get('_threads', '')} |"
           for name in STAGES if name in done]
    run.path("report.md").write_text("\n".join(md) + "\n")
    results = {k: v for k, v in done.items()}
    run.path("results.json").write_text(json.dumps(results, indent=1) + "\n")
    return {"table": table}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------ entry point
def quickstart(out: str | Path, *, fast: bool = False, overwrite: bool = False, threads: int | None = None,
               log: Log = print) -> dict[str, Any]:
    """Run (or continue) the pipeline into ``out``; returns the per-stage results. ``threads``: torch threads
    for every stage (default: the cores no other process keeps busy, measured before each stage)."""
    settings = SETTINGS["fast" if fast else "default"]
    out = Path(out)
    mode = _check_out(out, settings, overwrite=overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LmforgeError(f"cannot create --out {out} ({err.strerror}); pick a writable directory") from None
    run = Run(out, settings, log)
    t0 = time.perf_counter()
    if mode == "resume":
        log(f"continuing the quickstart in {out}: done already: {', '.join(run.done) or 'nothing'}")
    else:
        run.save()  # from now on the directory is a quickstart run that a second call can continue
        log(f"lmforge quickstart ({settings.name}) into {out}")
    for i, (name, (title, fn, folders)) in enumerate(STAGES.items(), 1):
        if name in run.done:
            log(f"[{i}/{len(STAGES)}] {title}: done before, skipped")
            continue
        for folder in folders:  # an interrupted attempt's leftovers: this stage starts over cleanly
            p = run.path(folder)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        log_file = run.path("logs", f"{name}.log")
        choice = _set_threads(threads, log)
        t = time.perf_counter()
        try:
            with _captured(log_file):
                result = fn(run)
        except (LmforgeError, Exception) as err:
            tail = log_file.read_text(errors="replace").splitlines()[-15:] if log_file.is_file() else []
            if not isinstance(err, LmforgeError):
                with open(log_file, "a") as f:
                    traceback.print_exc(file=f)
            for line in tail:
                log(f"    | {line}")
            raise LmforgeError(f"stage {name} ({title}) failed: {err}. Full log: {log_file}. Fix it and run the "
                               "same command again: finished stages are kept") from (None if isinstance(err, LmforgeError) else err)
        result["_seconds"] = round(time.perf_counter() - t, 1)
        result["_threads"] = choice.threads
        run.mark(name, result)
        log(f"[{i}/{len(STAGES)}] {title}: {_one_line(name, result)} ({result['_seconds']} s)")
    report = write_report(run, wall_s=time.perf_counter() - t0)
    run.mark("report", {"_seconds": 0})
    log("")
    log(report["table"])
    log("")
    log(f"report: {run.path('report.md')}")
    return run.done


def _set_threads(threads: int | None, log: Log) -> Any:
    """Before each stage: 2 threads on 2 cores where another job holds one are several times slower than 1
    (docs/quickstart.md#threads), so use the cores that are free unless told."""
    import torch

    from lmforge.train.threads import choose_threads

    choice = choose_threads(threads, probe_s=0.3)
    if choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    if choice.busy_elsewhere is not None and choice.threads < (os.cpu_count() or 1):
        log(f"    note: {choice.reason}; this stage trains with {choice.threads} thread(s) (--threads N to choose)")
    return choice


def _one_line(name: str, r: dict[str, Any]) -> str:
    if name == "data":
        return f"{r['corpus_docs']:,} stories, {r['files']} files, {r['total_mb']} MB"
    if name == "tokenizers":
        return f"vocab {r['wordpiece_vocab']} (WordPiece), {r['bpe_vocab']} (BPE)"
    if name == "shards":
        return f"{r['wordpiece_train_tokens']:,} / {r['bpe_train_tokens']:,} training tokens"
    if name in ("bert", "gpt"):
        return f"{r['steps']} steps, loss {r['first_loss']} -> {r['final_loss']}, {r['tokens_per_s']} tokens/s"
    if name == "cola":
        return (f"test MCC {r['pretrained']['test']['mcc']:.3f} pre-trained vs {r['scratch']['test']['mcc']:.3f} "
                f"scratch ({r['mcc_gain']:+.3f})")
    if name == "squad":
        return f"EM {r.get('exact', float('nan')):.1f}, F1 {r.get('f1', float('nan')):.1f}"
    if name == "generation":
        return repr(r["continuation"][:60])
    if name == "fewshot":
        return ", ".join(f"k={row['k']}: {row['neutral']:.3f}" for row in r["rows"]) + " (task-neutral)"
    return ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `lmforge quickstart`")
