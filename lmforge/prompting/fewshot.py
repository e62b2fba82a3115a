"""GPT-3 style few-shot (in-context) evaluation: k solved examples + the test example, no weight updates.

For every test example a seeded permutation of the demonstration pool is drawn once and its first k
items are the shots for each k (so the 1-shot prompt's shot is also in the 4-shot prompt: fewer moving
parts between the columns of the table). Demonstrations are separated by a blank line, as in the
GPT-3 paper's appendix G.

- Multiple-choice tasks (SST-2 / RTE with verbalised labels, SWAG endings) score every candidate
  continuation by its log-likelihood given the prompt: the raw sum of token log-probabilities and the
  per-token mean (length-normalised) each pick an answer, and both accuracies are reported.
- Generative tasks (SQuAD) decode greedily up to a newline and score with the official EM / F1.

A prompt that would not fit the model's context loses shots (from the end) until it fits; the result
says how many prompts lost shots. Demonstrations come from the task's train split; when the data has
none, they are drawn from the evaluated split itself, never the test example (or, for SQuAD, its
paragraph) — the notes say so.
"""
from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import DataError, InputError, suggest

Example = dict[str, Any]
SEPARATOR = "\n\n"  # between demonstrations


@dataclasses.dataclass(frozen=True)
class FewshotFormat:
    """How one task's examples become prompt text."""

    kind: str  # "choice" (score candidates) | "generate" (greedy answer + EM/F1)
    context: Callable[[Example], str]  # the example without its answer
    answer: Callable[[Example], str]  # the gold continuation (leading space included)
    candidates: Callable[[Example], list[str]] | None = None  # choice: every continuation, gold at index label
    split: str = "dev"  # the default evaluated split


def _verbalizer(words: Sequence[str]) -> tuple[Callable[[Example], str], Callable[[Example], list[str]]]:
    def answer(ex: Example) -> str:
        return f" {words[int(ex['label'])]}"

    def candidates(ex: Example) -> list[str]:
        return [f" {w}" for w in words]
    return answer, candidates


_SST2 = _verbalizer(["negative", "positive"])  # glue-sst2 labels: 0 negative, 1 positive
_RTE = _verbalizer(["True", "False"])  # glue-rte labels: entailment, not_entailment (GPT-3 G: True/False)


def _swag_answer(ex: Example) -> str:
    return f" {ex['endings'][int(ex['label'])]}"


def _squad_answer(ex: Example) -> str:
    return f" {ex['answers'][0]}" if ex["answers"] else " unanswerable"


FORMATS: dict[str, FewshotFormat] = {
    "glue-sst2": FewshotFormat("choice", lambda ex: f"Review: {ex['text']}\nSentiment:", *_SST2),
    "glue-rte": FewshotFormat("choice", lambda ex: f"{ex['text']}\nquestion: {ex['text_pair']} True or False?\nanswer:",
                              *_RTE),
    # SWAG: sent1, then sent2 (the start of the next sentence) that each ending completes
    "swag": FewshotFormat("choice", lambda ex: f"{ex['context']} {ex['lead']}".strip(), _swag_answer,
                          lambda ex: [f" {e}" for e in ex["endings"]], split="val"),
    # GPT-3 appendix G (SQuAD): the paragraph, then "Q: ...", then "A:"
    "squad": FewshotFormat("generate", lambda ex: f"{ex['context']}\n\nQ: {ex['question']}\n\nA:", _squad_answer),
    "squad-v2": FewshotFormat("generate", lambda ex: f"{ex['context']}\n\nQ: {ex['question']}\n\nA:", _squad_answer),
}


@dataclasses.dataclass
class FewshotResult:
    """Scores per k, per-example predictions, a sample of the prompts, and notes for the user."""

    task: str
    kind: str
    rows: list[dict[str, Any]]  # one per k: k, n, metrics, prompts_with_dropped_shots, mean_shots
    predictions: list[dict[str, Any]]  # one per (k, example)
    prompts: dict[int, list[str]]  # k -> the first few prompts
    notes: list[str]

    def table(self) -> str:
        """The accuracy-vs-k table as aligned text."""
        keys = [k for k in self.rows[0] if k not in ("k",)]
        header = "k".rjust(3) + "".join(f"  {k:>{max(len(k), 9)}}" for k in keys)
        lines = [header]
        for row in self.rows:
            cells = []
            for key in keys:
                v = row[key]
                text = f"{v:.4f}" if isinstance(v, float) and key.startswith("accuracy") else (
                    f"{v:.2f}" if isinstance(v, float) else str(v))
                cells.append(f"  {text:>{max(len(key), 9)}}")
            lines.append(f"{row['k']:>3}" + "".join(cells))
        return "\n".join(lines)


# --------------------------------------------------------------------------- data
def _read(task_name: str, data: str | Path, split: str) -> list[Example]:
    from lmforge.tasks import get_task

    return get_task(task_name).read(data, split)


def _pool(task_name: str, data: str | Path, split: str, notes: list[str]) -> tuple[list[Example], bool]:
    """Demonstrations: the train split when there is one; else the evaluated split (flagged True)."""
    if Path(data).is_dir():
        try:
            return _read(task_name, data, "train"), False
        except DataError:
            pass
    notes.append(f"no train split in {data}: demonstrations are drawn from the {split!r} split itself, "
                 "never the test example (nor, for SQuAD, another question on its paragraph).")
    return [], True


# --------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_continuations(model: Any, prompt: list[int], continuations: Sequence[list[int]]) -> list[tuple[float, int]]:
    """(sum of log p, token count) of each continuation given ``prompt``, one batched forward pass."""
    from lmforge.generation.step import lm_field

    field = lm_field(model)
    device = next(model.parameters()).device
    rows = [prompt + c for c in continuations]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # right padding: causal attention never looks at the pads
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    logits = model(ids.to(device), attention_mask=mask.to(device))[field].float()  # (C, W, V)
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)  # (C, W-1)
    out = []
    start = len(prompt) - 1  # logits at position t predict token t + 1
    for i, c in enumerate(continuations):
        out.append((float(logp[i, start:start + len(c)].sum()), len(c)))
    return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------- the evaluation
def fewshot_evaluate(model: Any, tokenizer: Any, task: str, data: str | Path, *,
                     shots: Sequence[int] = (0, 1, 4, 8), seed: int = 0, split: str | None = None,
                     limit: int | None = None, max_new_tokens: int = 32, n_prompts: int = 3,
                     progress: Callable[[str], None] | None = None) -> FewshotResult:
    """k-shot evaluation of ``model`` on ``task`` (a key of FORMATS) for every k in ``shots``."""
    if task not in FORMATS:
        raise InputError(f"few-shot evaluation has no prompt format for task {task!r}; supported: "
                         f"{', '.join(FORMATS)}.{suggest(task, FORMATS)}")
    if not shots or any(k < 0 for k in shots):
        raise InputError(f"--shots must be a list of numbers >= 0, got {list(shots)}.")
    fmt = FORMATS[task]
    split = split or fmt.split
    notes: list[str] = []
    examples = _read(task, data, split)
    if fmt.kind == "choice" and any(ex.get("label") is None for ex in examples):
        raise DataError(f"the {split!r} split of {data} has unlabelled examples; few-shot accuracy needs labels.")
    if limit is not None:
        examples = examples[:limit]
    pool, same_split = _pool(task, data, split, notes)
    if same_split:
        pool = _read(task, data, split)
    if fmt.kind == "choice":
        pool = [ex for ex in pool if ex.get("label") is not None]
    if max(shots) > 0 and len(pool) < max(shots) + (1 if same_split else 0):
        notes.append(f"the demonstration pool has {len(pool)} examples; prompts use at most that many shots.")
    limit_positions = int(model.config.max_positions)
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    prompts: dict[int, list[str]] = {}
    try:
        for k in sorted(set(shots)):
            rows.append(_evaluate_k(model, tokenizer, fmt, task, examples, pool, same_split, k=k, seed=seed,
                                    limit_positions=limit_positions, max_new_tokens=max_new_tokens,
                                    predictions=predictions, prompts=prompts, n_prompts=n_prompts))
            if progress is not None:
                progress(f"k={k}: " + ", ".join(f"{key}={v:.4f}" if isinstance(v, float) else f"{key}={v}"
                                               for key, v in rows[-1].items() if key != "k"))
    finally:
        model.train(was_training)
    for row in rows:
        if row["prompts_with_dropped_shots"]:
            notes.append(f"k={row['k']}: {row['prompts_with_dropped_shots']} of {row['n']} prompts dropped shots to "
                         f"fit the {limit_positions}-token context (mean shots used {row['mean_shots']:.2f}).")
        if row.get("prompts_left_truncated"):
            notes.append(f"k={row['k']}: {row['prompts_left_truncated']} test prompt(s) did not fit even with no "
                         "shots and were cut from the left.")
    return FewshotResult(task, fmt.kind, rows, predictions, prompts, notes)


def _shots_for(index: int, example: Example, pool: list[Example], same_split: bool, seed: int) -> list[Example]:
    """The demonstration order of one test example (seeded by seed and the example's position)."""
    rng = random.Random(seed * 1_000_003 + index)
    candidates = pool
    if same_split:  # never the test example itself, nor a question on the same paragraph
        candidates = [ex for ex in pool if ex["id"] != example["id"]
                      and not ("context" in ex and "question" in ex and ex["context"] == example["context"])]
    order = list(range(len(candidates)))
    rng.shuffle(order)
    return [candidates[i] for i in order]


def _build(tokenizer: Any, fmt: FewshotFormat, example: Example, demos: list[Example], *, room: int,
           budget: int) -> tuple[str, list[int], int, bool]:
    """The prompt (text, ids) with as many of ``demos`` as fit in ``budget`` tokens minus ``room``.
    Returns (text, ids, shots used, left-truncated?)."""
    context = fmt.context(example)
    n = len(demos)
    while True:
        text = SEPARATOR.join([fmt.context(d) + fmt.answer(d) for d in demos[:n]] + [context])
        ids = _encode(tokenizer, text)
        if len(ids) + room <= budget or n == 0:
            break
        n -= 1
    truncated = len(ids) + room > budget
    if truncated:
        ids = ids[len(ids) + room - budget:]
    return text, ids, n, truncated


def _evaluate_k(model: Any, tokenizer: Any, fmt: FewshotFormat, task: str, examples: list[Example],
                pool: list[Example], same_split: bool, *, k: int, seed: int, limit_positions: int,
                max_new_tokens: int, predictions: list[dict[str, Any]], prompts: dict[int, list[str]],
                n_prompts: int) -> dict[str, Any]:
    dropped = truncated = used_total = 0
    prompts[k] = []
    built: list[tuple[Example, str, list[int], list[list[int]]]] = []
    for i, ex in enumerate(examples):
        demos = _shots_for(i, ex, pool, same_split, seed)[:k] if k else []
        cands = [_encode(tokenizer, c) for c in fmt.candidates(ex)] if fmt.candidates else []
        room = max(len(c) for c in cands) if cands else max_new_tokens
        text, ids, used, cut = _build(tokenizer, fmt, ex, demos, room=room, budget=limit_positions)
        dropped += used < len(demos)
        truncated += cut
        used_total += used
        if len(prompts[k]) < n_prompts:
            prompts[k].append(text)
        built.append((ex, text, ids, cands))
    row: dict[str, Any] = {"k": k, "n": len(examples)}
    if fmt.kind == "choice":
        row.update(_score_choices(model, built, k, predictions))
    else:
        row.update(_score_generation(model, tokenizer, task, built, k, max_new_tokens, predictions))
    row["prompts_with_dropped_shots"] = dropped
    row["mean_shots"] = used_total / max(1, len(examples))
    if truncated:
        row["prompts_left_truncated"] = truncated
    return row


def _score_choices(model: Any, built: list[tuple[Example, str, list[int], list[list[int]]]], k: int,
                   predictions: list[dict[str, Any]]) -> dict[str, float]:
    right_raw = right_norm = 0
    for ex, _, ids, cands in built:
        scored = score_continuations(model, ids, cands)
        raw = [s for s, _ in scored]
        norm = [s / n for s, n in scored]
        pred_raw = max(range(len(raw)), key=raw.__getitem__)
        pred_norm = max(range(len(norm)), key=norm.__getitem__)
        gold = int(ex["label"])
        right_raw += pred_raw == gold
        right_norm += pred_norm == gold
        predictions.append({"k": k, "id": ex["id"], "gold": gold, "pred_raw": pred_raw, "pred_norm": pred_norm,
                            "loglik": raw, "loglik_per_token": norm})
    n = max(1, len(built))
    return {"accuracy_raw": right_raw / n, "accuracy_norm": right_norm / n}


def _score_generation(model: Any, tokenizer: Any, task: str,
                      built: list[tuple[Example, str, list[int], list[list[int]]]], k: int, max_new_tokens: int,
                      predictions: list[dict[str, Any]]) -> dict[str, float]:
    from lmforge.generation.decode import generate
    from lmforge.prompting.templates import cut_at_stop
    from lmforge.tasks import metrics

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    batch = 8
    for start in range(0, len(built), batch):
        chunk = built[start:start + batch]
        width = max(len(ids) for _, _, ids, _ in chunk)
        ids_t = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (_, _, ids, _) in enumerate(chunk):  # left padding for generation
            ids_t[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        out = generate(model, ids_t, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                       pad_token_id=pad, stop=["\n"], tokenizer=tokenizer, return_prompt=False)
        for i, (ex, _, _, _) in enumerate(chunk):
            tokens = [t for t in out[i].tolist() if t not in (pad, eos)]
            text = cut_at_stop(tokenizer.decode(tokens), ["\n"]).strip()
            answer = "" if text.lower() == "unanswerable" else text
            preds[ex["id"]], refs[ex["id"]] = answer, list(ex["answers"])
            predictions.append({"k": k, "id": ex["id"], "prediction": answer, "answers": ex["answers"],
                                "exact": metrics.squad_exact(answer, ex["answers"]),
                                "f1": metrics.squad_f1(answer, ex["answers"])})
    scores = metrics.squad_evaluate(preds, refs)
    return {"exact": float(scores["exact"]), "f1": float(scores["f1"])}


# --------------------------------------------------------------------------- outputs
def write_outputs(result: FewshotResult, out_dir: str | Path) -> dict[str, Path]:
    """results.json, table.txt, fewshot.png (score vs k), prompts.txt (a sample), predictions.jsonl."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "results.json", "table": out / "table.txt", "plot": out / "fewshot.png",
             "prompts": out / "prompts.txt", "predictions": out / "predictions.jsonl"}
    files["results"].write_text(json.dumps({"task": result.task, "kind": result.kind, "rows": result.rows,
                                            "notes": result.notes}, indent=2) + "\n")
    files["table"].write_text(result.table() + "\n")
    with files["predictions"].open("w", encoding="utf-8") as f:
        for p in result.predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    with files["prompts"].open("w", encoding="utf-8") as f:
        for k, texts in result.prompts.items():
            for j, text in enumerate(texts):
                f.write(f"===== k={k} prompt {j + 1} =====\n{text}\n\n")
    _plot(result, files["plot"])
    return files


def _plot(result: FewshotResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in result.rows]
    keys = ["accuracy_raw", "accuracy_norm"] if result.kind == "choice" else ["exact", "f1"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in keys:
        ax.plot(ks, [r[key] for r in result.rows], marker="o", label=key)
    ax.set_xlabel("shots (k)")
    ax.set_ylabel("accuracy" if result.kind == "choice" else "score (%)")
    ax.set_xticks(ks)
    ax.set_title(f"{result.task}: few-shot")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["FORMATS", "FewshotFormat", "FewshotResult", "fewshot_evaluate", "score_continuations", "write_outputs"]
