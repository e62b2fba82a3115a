"""The experiment registry and the runner that writes every experiment's results.json / PNG / report.md."""
from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, suggest
from lmforge.lab import parallel

Log = Callable[[str], None]


@dataclass
class Check:
    """One number the paper states beside ours, and whether the claim held at our scale."""

    what: str
    paper: str
    ours: str
    held: bool | None  # None: not comparable (a different scale / setting), said in ``note``
    note: str = ""


@dataclass
class Result:
    """What an experiment returns: its table (rows of dicts, same keys), the checks and free notes."""

    table: list[dict[str, Any]]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # anything the plot needs (goes to results.json too)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # more tables, by title


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    source: str  # paper, table / figure
    minutes: float  # default run on a quiet 2-core machine: its measured CPU time along the busiest process chain
    run: str = ""  # "module:function" (out, *, fast, seeds, log) -> Result; "" when another issue provides it
    plot: str = ""  # "module:function" (result, path) -> None
    provided_by: str = ""  # where it lives when it is not (yet) runnable here
    seeds: int = 1

    @property
    def runnable(self) -> bool:
        return bool(self.run)


_M = "lmforge.lab."
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("albert-params",
               "Factorized embeddings (V x E + E x H instead of V x H) and cross-layer sharing cut BERT's parameters "
               "~9x at the same width (ALBERT-base 12M vs BERT-base 108M)",
               "Lan et al. 2020 (ALBERT), tables 1, 3 and 4", 2.8, _M + "albert_params:run", _M + "albert_params:plot",
               seeds=3),
    Experiment("masking-stats",
               "BERT selects 15% of tokens and replaces them 80/10/10; static masking repeats each mask over epochs "
               "(RoBERTa: 4 times in 40 epochs with dupe factor 10) and dynamic masking matches or slightly beats it; "
               "ALBERT masks n-grams with p(n) ~ 1/n, n <= 3",
               "Devlin et al. 2019 section 3.1; Liu et al. 2019 (RoBERTa) section 4.1 and table 1; Lan et al. 2020 "
               "section 4.1", 3.6, _M + "masking_stats:run", _M + "masking_stats:plot", seeds=3),
    Experiment("pretrain-vs-scratch", "Pre-training helps fine-tuning, more with more pre-training steps",
               "Devlin et al. 2019 table 1; Radford et al. 2018 table 5", 3.9, _M + "pretrain_vs_scratch:run",
               _M + "pretrain_vs_scratch:plot", seeds=3),
    Experiment("nsp-vs-sop", "A model trained with NSP does poorly on SOP; one trained with SOP does well on NSP",
               "Lan et al. 2020 (ALBERT), table 5", 4.9, _M + "nsp_vs_sop:run", _M + "nsp_vs_sop:plot", seeds=3),
    Experiment("electra-vs-mlm", "At equal pre-training compute, replaced-token detection beats MLM on fine-tuning",
               "Clark et al. 2020 (ELECTRA), figure 3", 5.4, _M + "electra_vs_mlm:run", _M + "electra_vs_mlm:plot",
               seeds=3),  # the recipe's own fine-tuning seeds (--seeds does not change them)
    Experiment("distillation", "A distilled student keeps most of the teacher's score at a fraction of size / time",
               "Sanh et al. 2019 (DistilBERT), tables 1 and 3", 2.2, _M + "distillation:run", _M + "distillation:plot",
               seeds=2),
    Experiment("attention-scaling", "Dense attention costs O(n^2) in time and memory; sparse / LSH attention less",
               "Vaswani et al. 2017 table 1; Zaheer et al. 2020; Kitaev et al. 2020", 0.6,
               _M + "attention_scaling:run", _M + "attention_scaling:plot"),
    Experiment("gpt3-scaling",
               "GPT-3's table 2.1 sizes; validation loss falls as a power law of model size at equal tokens",
               "Brown et al. 2020 (GPT-3) table 2.1 and figure 3.1; Kaplan et al. 2020 figure 1", 3.9,
               _M + "gpt3_scaling:run", _M + "gpt3_scaling:plot", seeds=3),
    Experiment("fewshot", "In-context accuracy rises with k and with model size",
               "Brown et al. 2020 (GPT-3) figures 1.2 / 3.x", 7.3, _M + "fewshot:run", _M + "fewshot:plot", seeds=3),
    Experiment("zero-shot-tldr", "'TL;DR:' prompts a language model to summarise zero-shot",
               "Radford et al. 2019 (GPT-2) section 3.6, table 4", 5.2, _M + "zero_shot_tldr:run",
               _M + "zero_shot_tldr:plot"),
    Experiment("translation", "A language model learns to translate zero-shot from translations its corpus happens "
               "to hold, and translates better with a few examples in the prompt",
               "Radford et al. 2019 (GPT-2) section 3.7; Brown et al. 2020 (GPT-3) table 3.4", 4.9,
               _M + "translation:run", _M + "translation:plot", seeds=3),
]}


def _load(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def list_experiments() -> str:
    """A table of every experiment: name, default run time on 2 cores (or where it lives), claim."""
    lines = [f"{'name':<20} {'2 cores':>8}  claim (source)"]
    note = ("2 cores: the default run's time on a quiet 2-core machine (its measured CPU time; arms run in 2 "
            "one-thread processes). Wall clocks and loads: docs/lab.md. --fast: < 1 min.")
    for e in EXPERIMENTS.values():
        when = f"{e.minutes:g} min" if e.runnable else "-"
        lines.append(f"{e.name:<20} {when:>8}  {e.claim} ({e.source})")
        if not e.runnable:
            lines.append(f"{'':<30}not runnable here: {e.provided_by}")
    return "\n".join([*lines, "", note])


def machine() -> dict[str, Any]:
    """The machine facts beside every result (one definition: lmforge/compression/measure.py)."""
    from lmforge.compression.measure import machine as facts

    m = facts()
    return {**m, "date": m["date_utc"]}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))  # every key, in first-seen order

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(out)


def _held(v: bool | None) -> str:
    return {True: "held", False: "did NOT hold", None: "not comparable"}[v]


def write_report(e: Experiment, result: Result, out: Path, info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [f"# lab: {e.name}", "", f"**Claim.** {e.claim}.", "", f"**Source.** {e.source}.", "",
             f"**Run.** {'--fast (numbers not meaningful)' if info['fast'] else 'default'}, seeds {info['seeds']}, "
             f"{info['wall_s']:.0f} s wall, {info['cpu_s']:.0f} s CPU in all, {info['quiet_2core_s']:.0f} s on a quiet "
             f"2-core machine (CPU time of the main process + its busiest worker); {m['date']}, {m['cpu']}, {m['cores']} cores (shared with other jobs), "
             f"torch {m['torch']}, load average {m['load_average']}.", "", "## Paper vs ours", "",
             "| what | paper | ours | verdict |", "|---|---|---|---|"]
    for c in result.checks:
        lines.append(f"| {c.what} | {c.paper} | {c.ours} | {_held(c.held)}{' - ' + c.note if c.note else ''} |")
    lines += ["", "## Measured", "", markdown_table(result.table), ""]
    for title, rows in result.tables.items():
        lines += [f"### {title}", "", markdown_table(rows), ""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    lines += [f"![{e.name}]({e.name}.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def run_experiment(name: str, out: str | Path, *, fast: bool = False, seeds: int | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Run experiment ``name`` into ``out``: results.json, NAME.png and report.md; returns results.json's object."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown lab experiment {name!r}.{suggest(name, EXPERIMENTS)} Run `lmforge lab` to list "
                          "them.")
    e = EXPERIMENTS[name]
    if not e.runnable:
        raise ConfigError(f"lab experiment {name!r} is not runnable here yet: {e.provided_by}")
    seeds = e.seeds if seeds is None else seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parallel.MAKESPANS.clear()
    t0, cpu0, own0 = time.perf_counter(), parallel.cpu_seconds(), parallel.cpu_seconds(children=False)
    result: Result = _load(e.run)(out, fast=fast, seeds=seeds, log=log)
    # one-thread processes: CPU time = the wall clock of a quiet machine; the workers ran 2 at a time
    quiet = parallel.cpu_seconds(children=False) - own0 + sum(parallel.MAKESPANS)
    info = {"name": name, "claim": e.claim, "source": e.source, "fast": fast, "seeds": seeds,
            "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(parallel.cpu_seconds() - cpu0, 1),
            "quiet_2core_s": round(quiet, 1), "machine": machine()}
    _load(e.plot)(result, out / f"{name}.png")
    payload = {**info, "table": result.table, "tables": result.tables, "checks": [asdict(c) for c in result.checks], "notes": result.notes,
               "data": result.data}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    log(markdown_table(result.table))
    for title, rows in result.tables.items():
        log(f"\n{title}\n{markdown_table(rows)}")
    for c in result.checks:
        log(f"{c.what}: paper {c.paper}, ours {c.ours} -> {_held(c.held)}")
    write_report(e, result, out, info)
    log(f"{info['wall_s']:.0f} s wall, {info['cpu_s']:.0f} s CPU, ~{info['quiet_2core_s']:.0f} s on a quiet 2-core machine")
    log(f"wrote {out / 'results.json'}, {out / (name + '.png')}, {out / 'report.md'}")
    return payload
