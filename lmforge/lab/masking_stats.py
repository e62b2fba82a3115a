"""masking-stats: what the real MLM collators do to a real corpus (tiny-shakespeare, the BERT uncased vocab).

Every number comes from the objectives' own examples and ``collate`` (the batches the trainer sees):
the selection rate and the 80 / 10 / 10 split (BERT), whole-word masking's coverage of multi-piece words,
how often static masking repeats a mask over 40 passes (RoBERTa section 4.1) against dynamic masking, and
the span lengths of ALBERT's n-gram masking (the mlm+sop default) against BERT's token masking; and a toy
pre-training of one tiny BERT with static vs dynamic masking (RoBERTa table 1).
Without ../shared/refdata (or $LMFORGE_REFDATA) it falls back to the toy language and its own WordPiece.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.lab.registry import Check, Log, Result

ALBERT_P = np.array([6, 3, 2]) / 11  # p(n) ~ 1/n for n = 1, 2, 3 (ALBERT section 4.1)


def refdata() -> Path | None:
    here = Path(os.environ.get("LMFORGE_REFDATA") or Path(__file__).resolve().parents[3] / "shared" / "refdata")
    return here if (here / "text" / "tinyshakespeare.txt").is_file() else None


def corpus(out: Path, *, fast: bool) -> tuple[Any, str]:
    """(train ShardDataset, what it is): tiny-shakespeare (speeches = documents) with BERT's vocab."""
    from lmforge.data.shards import ShardDataset, prepare_shards
    from lmforge.tokenization.tokenizer import Tokenizer

    ref = refdata()
    if ref is not None:
        text = (ref / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
        tok = Tokenizer.from_pretrained(ref / "tokenizers" / "bert-base-uncased")
        what = "tiny-shakespeare (speeches as documents), bert-base-uncased WordPiece"
        doc_mode = "blank"
    else:
        from lmforge.data.toyland import generate

        generate(out / "toy", docs=300 if fast else 3000, examples=10, seed=0)
        text = (out / "toy" / "corpus" / "train.txt").read_text(encoding="utf-8")
        tok = Tokenizer.train([str(out / "toy" / "corpus" / "train.txt")], kind="wordpiece", vocab_size=2000,
                              show_progress=False)
        what = "the toy language (refdata not found), its own WordPiece"
        doc_mode = "line"
    if fast:
        text = text[:40_000]
    src = out / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    prepare_shards([src], tokenizer=tok, out=out / "shards", doc_mode=doc_mode, val_fraction=0.01, progress=False,
                   overwrite=True)
    return (tok, ShardDataset(out / "shards", "train")), what


def _batches(objective: Any, dataset: Any, *, limit: int, epoch: int = 0, batch: int = 32):
    examples = objective.examples(dataset)
    n = min(len(examples), limit)
    for lo in range(0, n, batch):
        yield objective.collate([examples.example(i, seed=0, epoch=epoch) for i in range(lo, min(lo + batch, n))])


def _runs(selected: np.ndarray) -> np.ndarray:
    """Lengths of the runs of consecutive selected positions in each row."""
    out = []
    for row in selected:
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        out.append(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _hist3(lengths: np.ndarray | list[int]) -> list[float]:
    lengths = np.asarray(lengths)
    return [float(np.mean(lengths == 1)), float(np.mean(lengths == 2)), float(np.mean(lengths == 3)),
            float(np.mean(lengths > 3))] if len(lengths) else [0.0] * 4


def split_stats(objective: Any, dataset: Any, tok: Any, *, limit: int) -> dict[str, Any]:
    """Rate of selected candidates, 80 / 10 / 10, runs of selected tokens, whole-word coverage."""
    from lmforge.objectives.mlm import continuation_table

    special = np.zeros(len(tok), dtype=bool)
    special[list(tok.all_special_ids)] = True
    cont = continuation_table(tok)
    sel = cand = n_mask = n_keep = n_rand = 0
    runs, partial, words = [], 0, 0
    for b in _batches(objective, dataset, limit=limit):
        ids_in, labels = b["input_ids"].numpy(), b["labels"].numpy()
        chosen = labels != -100
        original = np.where(chosen, labels, ids_in)
        cand += int((~special[original] & (original != objective.pad_token_id)).sum())
        sel += int(chosen.sum())
        n_mask += int((ids_in[chosen] == tok.mask_token_id).sum())
        n_keep += int((ids_in[chosen] == labels[chosen]).sum())
        n_rand += int(((ids_in[chosen] != tok.mask_token_id) & (ids_in[chosen] != labels[chosen])).sum())
        runs.append(_runs(chosen))
        # multi-piece words with some piece selected: how many have all their pieces selected
        for row_ids, row_sel in zip(original, chosen):
            word_start = ~cont[row_ids] | special[row_ids]
            starts = np.flatnonzero(word_start)
            for s, e in zip(starts, np.append(starts[1:], len(row_ids))):
                if e - s >= 2 and row_sel[s:e].any():
                    words += 1
                    partial += int(not row_sel[s:e].all())
    return {"selected": sel / max(cand, 1), "mask": n_mask / max(sel, 1), "random": n_rand / max(sel, 1),
            "keep": n_keep / max(sel, 1), "runs": _hist3(np.concatenate(runs)), "whole_words": 1 - partial / max(words, 1),
            "multi_piece_words": words, "predictions": sel}


def repetition(objective: Any, dataset: Any, *, sequences: int, passes: int = 40) -> dict[str, float]:
    """Over ``passes`` passes of the data (RoBERTa's 40 epochs), how many distinct masks each sequence gets
    and how often each is seen. A static set holds dupe_factor copies, so a pass is 1 / dupe_factor of an epoch."""
    examples = objective.examples(dataset)
    copies = objective.masking.copies()
    base = len(examples) // copies
    distinct, seen = [], []
    for seq in range(min(sequences, base)):
        masks: dict[bytes, int] = {}
        for p in range(passes):
            epoch, copy = divmod(p, copies)
            labels = examples.example(copy * base + seq, seed=0, epoch=epoch)["labels"]
            key = np.asarray(labels).tobytes()
            masks[key] = masks.get(key, 0) + 1
        distinct.append(len(masks))
        seen.append(np.mean(list(masks.values())))
    return {"distinct_masks": float(np.mean(distinct)), "times_each_seen": float(np.mean(seen))}


def ngram_spans(objective: Any, dataset: Any, *, limit: int) -> list[int]:
    """Span lengths (in words) that the objective's masker draws on the sequences it builds."""
    spans: list[int] = []
    for b in _batches(objective, dataset, limit=limit):
        ids_in, labels = b["input_ids"].numpy(), b["labels"].numpy()
        original = np.where(labels != -100, labels, ids_in)
        for i, row in enumerate(original):
            row = row[row != objective.pad_token_id]
            spans += objective.masker.select_spans(row, np.random.default_rng([7, i, len(spans)]))[1]
    return spans


def synthetic_spans(*, sequences: int, length: int = 128, seed: int = 0) -> list[int]:
    """Span lengths of ALBERT's procedure alone: single-token units, no inner [SEP], at 15% of ``length``."""
    from lmforge.objectives.mlm import Masker, MaskingConfig

    m = Masker(config=MaskingConfig(max_ngram=3), vocab_size=1000, special_ids=[0, 1, 2, 3], mask_token_id=3)
    rng = np.random.default_rng(seed)
    spans: list[int] = []
    for _ in range(sequences):
        ids = rng.integers(4, 1000, size=length)
        ids[0], ids[-1] = 1, 2
        spans += m.select_spans(ids, rng)[1]
    return spans


# the toy run: the same tiny BERT pre-trained with static (dupe factor 10) and with dynamic masking. The corpus is
# small on purpose: RoBERTa's comparison is about repeated passes (each static mask seen 4 times in 40 epochs), so
# the default run makes ~40 passes over it (a mask is then seen ~4 times, as in RoBERTa section 4.1)
TOY_MODEL = {"preset": "bert-tiny", "hidden_dropout": 0.0, "attention_dropout": 0.0, "max_positions": 128}
TOY_DOCS, TOY_STEPS, TOY_BATCH, TOY_SEQ = {True: 300, False: 700}, {True: 6, False: 1000}, {True: 8, False: 32}, 64
SST2_EXAMPLES, FINETUNE_EPOCHS, FINETUNE_LR = {True: 60, False: 1000}, {True: 1, False: 5}, 3e-4
# RoBERTa table 1 (BERT-base reimplementation, dev): static vs dynamic masking
ROBERTA_TABLE1 = {"static": {"SQuAD 2.0 F1": 78.3, "MNLI-m": 84.3, "SST-2": 92.5},
                  "dynamic": {"SQuAD 2.0 F1": 78.7, "MNLI-m": 84.0, "SST-2": 92.9}}


def _toy_arm(out: Path, shards: Path, *, mode: str, seed: int, fast: bool) -> dict[str, float]:
    """Pre-train the toy BERT with ``mode`` masking (one arm; runs in a worker process): the validation MLM loss /
    accuracy on masks common to both arms, the last training losses, and a toy SST-2 fine-tune's accuracy."""
    import json
    import shutil

    from lmforge.lab.toy import finetune_toy, mlm_validation
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train.config import TrainConfig
    from lmforge.train.logging import read_metrics

    steps = TOY_STEPS[fast]
    run = out / "toy-run" / f"{mode}-seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(TOY_MODEL) + "\n")
    train = TrainConfig(max_steps=steps, batch_size=TOY_BATCH[fast], seq_len=TOY_SEQ, lr=2e-3, warmup_ratio=0.06,
                        seed=seed, log_every=max(1, steps // 20), save_every=steps, keep=1, progress=False)
    pretrain(PretrainConfig(model=str(run / "model.json"), objective="mlm", masking=mode,
                            dupe_factor=10 if mode == "static" else None, data=str(shards), out=str(run / "out"),
                            val_batches=0, device="cpu", train=train), log=lambda _: None)
    last = [r["mlm_loss"] for r in read_metrics(run / "out") if r.get("split") == "train"][-3:]
    val = mlm_validation(run / "out", shards, batches=2 if fast else 100, seq_len=TOY_SEQ)
    ft = finetune_toy(run / "out", out / "toy-run" / "data" / "sst2", run / "sst2", task="glue-sst2", seed=seed,
                      epochs=FINETUNE_EPOCHS[fast], lr=FINETUNE_LR)
    return {"val_loss": val["loss"], "val_accuracy": val["accuracy"], "train_loss": float(np.mean(last)),
            "dev_accuracy": ft["dev_accuracy"], "test_accuracy": ft["test_accuracy"]}


def toy_run(out: Path, *, fast: bool, seeds: int, log: Log
            ) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """Static (dupe factor 10) vs dynamic masking on the toy corpus, same model / steps / lr / seed, the two arms
    side by side in 2 one-thread processes; rows (mean and std over seeds), the passes made over the data and
    every run's own numbers."""
    from lmforge.data.shards import ShardDataset
    from lmforge.lab.parallel import run_jobs
    from lmforge.lab.toy import toy_shards
    from lmforge.objectives import build_objective

    tok, shards = toy_shards(out / "toy-run", docs=TOY_DOCS[fast], examples=SST2_EXAMPLES[fast], vocab=400 if fast
                             else 1000, val_fraction=0.3)
    sequences = len(build_objective("mlm", tokenizer=tok, seq_len=TOY_SEQ).examples(ShardDataset(shards, "train")))
    passes = TOY_STEPS[fast] * TOY_BATCH[fast] / sequences
    arms = [(mode, seed) for seed in range(seeds) for mode in ("static", "dynamic")]  # both at once, same load
    done = run_jobs([(_toy_arm, (out, shards), {"mode": mode, "seed": seed, "fast": fast})
                     for mode, seed in arms], workers=1 if fast else 2)
    per_run = [{"masking": mode, "seed": seed, **r} for (mode, seed), r in zip(arms, done)]
    for r in per_run:
        log(f"toy run {r}")
    rows = []
    for mode in ("static", "dynamic"):
        runs = [r for (m, _), r in zip(arms, done) if m == mode]
        col = lambda k: [r[k] for r in runs]  # noqa: E731
        rows.append({"masking": "static, dupe factor 10" if mode == "static" else "dynamic",
                     "val MLM loss": float(np.mean(col("val_loss"))), "loss std": float(np.std(col("val_loss"))),
                     "val MLM accuracy": float(np.mean(col("val_accuracy"))),
                     "train MLM loss (last logs)": float(np.mean(col("train_loss"))),
                     "SST-2 dev acc": float(np.mean(col("dev_accuracy"))),
                     "dev std": float(np.std(col("dev_accuracy"))),
                     "SST-2 test acc": float(np.mean(col("test_accuracy"))),
                     "test std": float(np.std(col("test_accuracy"))), "steps": TOY_STEPS[fast],
                     "passes": round(passes, 1), "seeds": seeds})
        log(f"toy run {rows[-1]}")
    return rows, passes, per_run


def _toy_check(static: dict[str, Any], dynamic: dict[str, Any], *, fast: bool) -> Check:
    """RoBERTa table 1: dynamic masking matches or slightly beats static (held: dynamic's validation MLM loss is
    not worse than static's by more than the seeds' spread)."""
    gap = static["val MLM loss"] - dynamic["val MLM loss"]  # > 0: dynamic is better
    spread = static["loss std"] + dynamic["loss std"]
    paper = " / ".join(f"{ROBERTA_TABLE1['static'][k]:g} vs {ROBERTA_TABLE1['dynamic'][k]:g} {k}"
                       for k in ROBERTA_TABLE1["static"])
    return Check("static vs dynamic masking: dynamic matches or slightly beats static",
                 f"{paper} (RoBERTa table 1, static vs dynamic)",
                 f"toy val MLM loss {static['val MLM loss']:.3f} +- {static['loss std']:.3f} vs "
                 f"{dynamic['val MLM loss']:.3f} +- {dynamic['loss std']:.3f}; toy SST-2 dev accuracy "
                 f"{static['SST-2 dev acc']:.3f} vs {dynamic['SST-2 dev acc']:.3f} ({static['passes']:g} passes)",
                 gap >= -max(spread, 0.01) if not fast else None,
                 note="held = dynamic's val MLM loss is at most the two arms' std summed (at least 0.01) above "
                      "static's; " + ("dynamic lower by more than that spread" if gap > max(spread, 0.01) else
                                      "within that spread (a match)" if abs(gap) <= max(spread, 0.01) else
                                      "dynamic higher by more than that spread"))


def _sigma(p: float, n: int) -> float:
    return 4.5 * float(np.sqrt(p * (1 - p) / max(n, 1)))


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.objectives import build_objective
    from lmforge.objectives.mlm import MaskingConfig

    (tok, train), what = corpus(out, fast=fast)
    limit = 64 if fast else 2000
    seq = 128
    log(f"corpus: {what}, {train.num_tokens:,} training tokens")
    dyn = build_objective("mlm", tokenizer=tok, seq_len=seq)
    wwm = build_objective("mlm", tokenizer=tok, seq_len=seq, masking=MaskingConfig(whole_word=True))
    sop = build_objective("mlm+sop", tokenizer=tok, seq_len=seq)  # ALBERT default: n-grams of whole words
    rows, stats = [], {}
    for name, obj in (("mlm (BERT tokens, dynamic)", dyn), ("mlm --whole-word", wwm), ("mlm+sop (ALBERT n-grams)", sop)):
        s = stats[name] = split_stats(obj, train, tok, limit=limit)
        rows.append({"masking": name, "selected": s["selected"], "[MASK]": s["mask"], "random": s["random"],
                     "unchanged": s["keep"], "whole words": s["whole_words"], "run 1": s["runs"][0],
                     "run 2": s["runs"][1], "run 3": s["runs"][2], "run >3": s["runs"][3]})
    rep = {}
    static = build_objective("mlm", tokenizer=tok, seq_len=seq, masking=MaskingConfig(mode="static", dupe_factor=10))
    for name, obj in (("static, dupe factor 10", static), ("dynamic", dyn)):
        rep[name] = repetition(obj, train, sequences=5 if fast else 50)
    spans = ngram_spans(sop, train, limit=limit)
    span_hist = _hist3(spans)
    procedure = _hist3(synthetic_spans(sequences=100 if fast else 3000))
    base = stats["mlm (BERT tokens, dynamic)"]
    n = base["predictions"]
    toy, passes, toy_runs = toy_run(out, fast=fast, seeds=seeds, log=log)
    checks = [
        Check("tokens selected", "15%", f"{base['selected']:.2%}", abs(base["selected"] - 0.15) < 0.005),
        Check("of those: [MASK] / random / unchanged", "80 / 10 / 10",
              f"{base['mask']:.1%} / {base['random']:.1%} / {base['keep']:.1%}",
              all(abs(v - p) < _sigma(p, n) for v, p in ((base["mask"], 0.8), (base["random"], 0.1), (base["keep"], 0.1)))),
        Check("whole-word masking: multi-piece words masked whole", "100%",
              f"{stats['mlm --whole-word']['whole_words']:.1%} (token masking: {base['whole_words']:.1%})",
              stats["mlm --whole-word"]["whole_words"] == 1.0),
        Check("static masking: times each mask is seen in 40 passes (dupe factor 10)", "4",
              f"{rep['static, dupe factor 10']['times_each_seen']:g} ({rep['static, dupe factor 10']['distinct_masks']:g} "
              f"masks; dynamic: {rep['dynamic']['distinct_masks']:g} masks)",
              rep["static, dupe factor 10"]["times_each_seen"] == 4.0),
        Check("ALBERT n-gram span lengths n = 1 / 2 / 3 (words)", "54.5 / 27.3 / 18.2%",
              " / ".join(f"{100 * x:.1f}" for x in span_hist[:3]) + "%",
              all(abs(span_hist[i] - ALBERT_P[i]) < _sigma(ALBERT_P[i], len(spans)) + 0.03 for i in range(3)),
              note="the paper states the proposal p(n); in ALBERT's procedure (and ours) a span that overshoots "
                   "the ~19 predictions of a 128-token sequence is shortened and one that touches a chosen span "
                   "is skipped, both more often for long spans, so the accepted lengths lean short"),
        _toy_check(*toy, fast=fast),
    ]
    notes = [f"Corpus: {what}; sequences of {seq} tokens; {limit} sequences per row ({n:,} predictions in the "
             "first row).",
             "'run n' = share of runs of n consecutive selected tokens in the collated batches (a word of several "
             "pieces or adjacent spans make longer runs than the span length in words).",
             "The last row isolates ALBERT's procedure (random single-token units, no inner [SEP]): its accepted "
             f"lengths are {' / '.join(f'{100 * x:.1f}' for x in procedure[:3])}%: a long span is shortened to fit "
             "the budget or skipped when it touches a chosen one. The larger lean on the real sequences should come from "
             "multi-piece words (a span of 3 words is often more tokens than the budget has left) and from spans "
             "stopping at the [SEP] between the two segments of an mlm+sop pair (not measured apart).",
             "The 80 / 10 / 10 check allows 4.5 binomial standard deviations of the sample; the span check that "
             "plus 3 points for the skipped overlaps.",
             f"Repetition over 40 passes (RoBERTa section 4.1): {rep}.",
             "With n-gram masking the runs of masked tokens grow from (token masking) "
             f"{' / '.join(f'{100 * x:.1f}' for x in base['runs'][:3])}% to (mlm+sop) "
             f"{' / '.join(f'{100 * x:.1f}' for x in stats['mlm+sop (ALBERT n-grams)']['runs'][:3])}% "
             "for lengths 1 / 2 / 3 (issue 22 measured 85.5 / 12.5 / 1.7% before n-gram masking existed).",
             f"Toy run (static vs dynamic): {TOY_MODEL['preset']} shape without dropout, mlm, {TOY_STEPS[fast]} steps "
             f"x {TOY_BATCH[fast]} x {TOY_SEQ} tokens, lr 2e-3, on {TOY_DOCS[fast]} toy stories (30% held out): "
             f"{passes:.1f} passes over the training sequences, so each static mask is seen ~{passes / 10:.1f} "
             "times (RoBERTa: 4). Validation MLM is scored on the same dynamic masks (seed 0) for both models; "
             f"the toy SST-2 fine-tune: {SST2_EXAMPLES[fast]:,} sentences, {FINETUNE_EPOCHS[fast]} epochs, lr "
             f"{FINETUNE_LR:g}, dev = the best epoch's; mean and std over {seeds} seed(s)."]
    return Result(table=rows + [{"masking": "ALBERT spans (words), redrawn on the mlm+sop sequences",
                                 "run 1": span_hist[0], "run 2": span_hist[1], "run 3": span_hist[2],
                                 "run >3": span_hist[3]},
                                {"masking": "ALBERT spans, procedure alone (single-token units, 128 random tokens)",
                                 "run 1": procedure[0], "run 2": procedure[1], "run 3": procedure[2],
                                 "run >3": procedure[3]}],
                  checks=checks, notes=notes, tables={"Toy run: static vs dynamic masking (mlm, tiny BERT)": toy},
                  data={"runs": {k: v["runs"] for k, v in stats.items()}, "spans": span_hist, "repetition": rep,
                        "toy_runs": toy_runs})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toy = next(iter(result.tables.values()), None)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 1]})
    series = {**{f"token runs: {k}": v for k, v in result.data["runs"].items()},
              "ALBERT spans (words), ours": result.data["spans"], "ALBERT p(n) ~ 1/n": [*ALBERT_P, 0.0]}
    width = 0.8 / len(series)
    for i, (name, hist) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(4)], [100 * h for h in hist], width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(4)], ["1", "2", "3", ">3"])
    ax.set_xlabel("length of a run of masked tokens / of a span")
    ax.set_ylabel("% of runs / spans")
    ax.legend(fontsize=7)
    if toy:  # the toy run: validation MLM loss and toy SST-2 dev accuracy per arm, std over seeds
        names = [r["masking"] for r in toy]
        bx.bar(names, [r["val MLM loss"] for r in toy], yerr=[r["loss std"] for r in toy], capsize=3,
               color=["tab:gray", "tab:blue"])
        bx.set_ylabel("toy validation MLM loss")
        for i, r in enumerate(toy):
            bx.text(i, r["val MLM loss"] / 2, f"toy SST-2 dev\naccuracy {r['SST-2 dev acc']:.3f}", ha="center",
                    color="white", fontsize=9)
        bx.set_title(f"toy run: {toy[0]['passes']:g} passes, {toy[0]['seeds']} seed(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
