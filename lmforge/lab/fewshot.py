"""fewshot: in-context accuracy against k and model size (GPT-3 figure 1.2's shape) on the toy sentiment task.

The corpus gets natural demonstrations (toyland/demos.py), as web text has them (GPT-2 section 3): reviews followed
by "Sentiment: positive|negative", task-neutral "Input: <sentence> Output: <answer>." runs in which every line of a
document answers the same one of three tasks over the same sentences (its sentiment, whether it is negated, whether
it is about a person), and stories followed by Q: / A: pairs. Toy GPTs of 3 sizes are pre-trained on it for the same
tokens; each is prompted in two formats with k solved examples from the toy SST-2 train split and the dev sentence:

  named    "Review: <sentence> Sentiment:"; the verdict with the higher log-likelihood (the prompt names the task)
  neutral  "Input: <sentence> Output:"; the right verdict must beat all six answer words of the three tasks, so
           the model must also tell from the shots which task is asked (GPT-3 figure 1.2's prompt-less curves)

Shots are redrawn per seed: mean +- std over seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.toyland.demos import FEWSHOT_KINDS, FEWSHOT_SHARE
from lmforge.lab.registry import Check, Log, Result

SHOTS = (0, 1, 4, 8, 16)
DROPPED: dict[int, int] = {}  # k -> shots dropped to fit the context, over the last run
# the corpus mix (70% demonstrations, why: toyland/demos.py); 1200 steps keep the run under 10 minutes
SHARE, KINDS = FEWSHOT_SHARE, FEWSHOT_KINDS
FORMATS = ("named", "neutral")


def accuracy(model: Any, tok: Any, examples: list[dict[str, Any]], pool: list[dict[str, Any]], k: int,
             seed: int) -> float:
    """k-shot accuracy, task named (lmforge.prompting.demos.named_accuracy); counts the shots dropped in DROPPED."""
    from lmforge.prompting.demos import named_accuracy

    acc, dropped = named_accuracy(model, tok, examples, pool, k, seed)
    DROPPED[k] = DROPPED.get(k, 0) + dropped
    return acc


def neutral_accuracy(model: Any, tok: Any, examples: list[dict[str, Any]], pool: list[dict[str, Any]], k: int,
                     seed: int) -> tuple[float, float]:
    """k-shot accuracy, task-neutral, and the share of verdict answers (lmforge.prompting.demos.neutral_accuracy)."""
    from lmforge.prompting import demos

    acc, on_task, dropped = demos.neutral_accuracy(model, tok, examples, pool, k, seed)
    DROPPED[k] = DROPPED.get(k, 0) + dropped
    return acc, on_task


def _size_job(out: Path, shards: Path, size: tuple[int, int, int], examples: list[dict[str, Any]],
              pool: list[dict[str, Any]], *, steps: int, batch: int, seq: int, shots: tuple[int, ...], seeds: int
              ) -> tuple[dict[str, Any], dict[str, dict[int, list[float]]], dict[int, list[float]], dict[int, int]]:
    """Pre-train one toy GPT and measure its k-shot accuracies (one size; runs in a worker process): (the trained
    run, {format: {k: accuracy per seed}}, {k: neutral-format share of verdict answers per seed}, {k: shots dropped
    to fit the context})."""
    import torch

    from lmforge.lab.toy_gpt import load, train_gpt

    DROPPED.clear()
    trained = train_gpt(out / "runs", shards, size, steps=steps, batch=batch, seq=seq)
    model, tok = load(trained["dir"])
    accs: dict[str, dict[int, list[float]]] = {f: {} for f in FORMATS}
    on_task: dict[int, list[float]] = {}
    with torch.no_grad():
        for k in shots:
            draws = range(seeds if k else 1)  # k = 0 has no shots to redraw: one pass stands for every seed
            accs["named"][k] = [accuracy(model, tok, examples, pool, k, s) for s in draws]
            neutral = [neutral_accuracy(model, tok, examples, pool, k, s) for s in draws]
            accs["neutral"][k], on_task[k] = [a for a, _ in neutral], [t for _, t in neutral]
    widen = lambda v: v * seeds if len(v) == 1 else v  # noqa: E731
    accs = {f: {k: widen(v) for k, v in by_k.items()} for f, by_k in accs.items()}
    return trained, accs, {k: widen(v) for k, v in on_task.items()}, dict(DROPPED)


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread, run_jobs
    from lmforge.lab.toy_gpt import FAST_SIZES, SIZES, demo_data
    from lmforge.tasks import get_task

    steps, batch, seq = (8, 4, 256) if fast else (1200, 8, 256)
    shots = (0, 1, 4) if fast else SHOTS
    limit = 12 if fast else 400  # every dev sentence of the default run: 1 s.e. 0.025
    DROPPED.clear()
    with one_thread():
        shards = demo_data(out, docs=300 if fast else 12000, examples=60 if fast else 800, share=SHARE, kinds=KINDS,
                           vocab=400 if fast else 800)
        task = get_task("glue-sst2")
        examples = task.read(out / "data" / "sst2", "dev")[:limit]
        pool = task.read(out / "data" / "sst2", "train")
        corpus = (out / "data" / "corpus" / "train.txt").read_text()
        seen = sum(f"{ex['text']} Sentiment" in corpus or f"{ex['text']} Output" in corpus for ex in examples)
        rows, curves, named, neutral = [], {}, {}, {}
        sizes = FAST_SIZES if fast else SIZES
        # one process per size (largest first: it takes longest), 2 side by side
        jobs = [(_size_job, (out, shards, size, examples, pool), {"steps": steps, "batch": batch, "seq": seq,
                                                                  "shots": shots, "seeds": seeds})
                for size in reversed(sizes)]
        done = run_jobs(jobs, workers=1 if fast else 2)[::-1]
        DROPPED.clear()
        for trained, accs, on_task, dropped in done:
            for k, n in dropped.items():
                DROPPED[k] = DROPPED.get(k, 0) + n
            size = trained["size"]
            named[size] = {k: [float(np.mean(v)), float(np.std(v))] for k, v in accs["named"].items()}
            neutral[size] = {k: [float(np.mean(v)), float(np.std(v))] for k, v in accs["neutral"].items()}
            curves[f"{size}, neutral"], curves[f"{size}, named"] = neutral[size], named[size]
            base = {"model": size, "N (non-embedding)": trained["N"], "val loss": trained["val_loss"]}
            for what, values in (("accuracy, task named (Review: ... Sentiment:)", accs["named"]),
                                 ("accuracy, task-neutral (Input: ... Output:)", accs["neutral"]),
                                 ("task-neutral: answers that are a verdict", on_task)):
                rows.append({**base, "prompt": what,
                             **{f"k={k}": f"{np.mean(values[k]):.3f} +- {np.std(values[k]):.3f}" for k in shots}})
            log(f"{size}: named " + ", ".join(f"k={k} {np.mean(v):.3f}" for k, v in accs["named"].items())
                + "; neutral " + ", ".join(f"k={k} {np.mean(v):.3f}" for k, v in accs["neutral"].items()))
    se = float(np.sqrt(0.25 / len(examples)))  # one standard error of a coin at this many examples
    positive = float(np.mean([int(ex["label"]) for ex in examples]))
    chance = max(positive, 1 - positive)  # always answering the more frequent verdict
    first, last = rows[0]["model"], rows[-1]["model"]
    small, large = named[first], named[last]
    n_small, n_large = neutral[first], neutral[last]
    k_max = max(shots)
    gain = lambda c: c[k_max][0] - c[0][0]  # noqa: E731
    checks = [
        Check("zero-shot above chance (largest model, task named)", "yes: GPT-3 zero-shot well above chance on most "
              "tasks", f"{large[0][0]:.3f} vs {chance:.3f} always the majority verdict (1 s.e. {se:.3f})",
              None if fast else large[0][0] > chance + 2 * se),
        Check("zero-shot rises with model size (task named)", "yes (GPT-3 figure 1.2 / 3.x; GPT-2 figure 1)",
              f"{small[0][0]:.3f} ({first}) -> {large[0][0]:.3f} ({last})",
              None if fast else large[0][0] > small[0][0] + 2 * se and large[0][0] > chance,
              note="held needs the larger model above the majority verdict too (a flip from always-minority to "
                   "always-majority is not a rise)"),
        Check(f"few-shot rises with k (largest model, task-neutral prompt, k = 0 -> {k_max})",
              "yes, more steeply for larger models (GPT-3 figure 1.2)",
              " -> ".join(f"{n_large[k][0]:.3f}" for k in shots),
              None if fast else n_large[k_max][0] > n_large[0][0] + max(n_large[k_max][1], 2 * se)),
        Check(f"the k = {k_max} gain is larger for the larger model (task-neutral prompt)",
              "yes (figure 1.2: the gap widens with size)", f"{first} {gain(n_small):+.3f}, {last} {gain(n_large):+.3f}",
              None if fast else gain(n_large) > max(0.0, gain(n_small)) + 2 * se,
              note="held needs the gap to exceed 2 standard errors (differences smaller than that are noise)"),
        Check(f"few-shot rises with k when the prompt names the task (largest model, k = 0 -> {k_max})",
              "yes, less than without a prompt (GPT-3 figure 1.2: the natural-language prompt's curve starts higher)",
              " -> ".join(f"{large[k][0]:.3f}" for k in shots),
              None if fast else large[k_max][0] > large[0][0] + max(large[k_max][1], 2 * se)),
    ]
    notes = [f"Corpus: toy stories with {SHARE:.0%} of documents replaced by natural demonstrations (3/7 review runs of "
             "1-4 'Review: ... Sentiment: ...' lines, 3/7 runs of 2-6 'Input: ... Output: ...' lines all answering one "
             "task drawn per document among sentiment (positive / negative), negation (yes / no) and person (person / "
             f"thing), 1/7 stories with Q: / A: pairs); {seen} of the {len(examples)} dev sentences also occur in a "
             "demonstration of the corpus (the toy language is small; GPT-3 section 4 measures such contamination too).",
             f"Models: GPT-2 bodies, {steps} steps x {batch} x {seq} tokens each, lr 2e-3. Evaluation: the first "
             f"{len(examples)} toy SST-2 dev sentences, shots (sentiment demonstrations in the prompt's format) from "
             f"its train split, {seeds} seed(s) of shot draws. Task named: the higher of the two verdicts. "
             "Task-neutral: the right verdict must score above all six answer words of the three io tasks, so a model "
             "that does not tell from the shots which task is asked loses points (the last row of each model: how "
             f"often its answer was a verdict at all). Chance: always the more frequent verdict scores {chance:.3f}.",
             "Shots dropped (from the front) to fit the context, summed over sizes, formats, seeds and examples: "
             + (", ".join(f"k={k}: {n}" for k, n in DROPPED.items() if n) or "none") + "."]
    return Result(table=rows, checks=checks, notes=notes, data={"shots": list(shots), "curves": curves,
                                                                "n_examples": len(examples), "chance": chance})


def plot(result: Result, path: Path) -> None:
    from lmforge.lab.toy_gpt import plot_shot_curves

    plot_shot_curves(result, path, chance_label="majority verdict", xlabel="k (demonstrations in the prompt)",
                     ylabel=f"toy sentiment accuracy ({result.data['n_examples']} dev sentences)",
                     title="in-context learning on the toy language", dashed="named")
