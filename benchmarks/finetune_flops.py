"""The matrix-product FLOPs of a fine-tuning run: HF Trainer's padded batches against lmforge's.

    python benchmarks/finetune_flops.py [--tasks squad300 cola sst2] [--shuffles 20] [--size mini|base]

Counts, for the workloads of benchmarks/finetuning.py (same data, same tokenizer, same windows), the FLOPs of
the matrix products of a training step (forward + backward = 3x the forward), per token and layer
2 (4 H^2 + 2 H F) for the projections and the MLP plus 4 T H for the two attention products over the batch's
padded length T:
* HF: `DataCollatorWithPadding` over randomly ordered batches: every position of the padded (B, T) batch;
* lmforge: length-grouped batches (`group_by_length`, 8-batch chunks), padding-free projections and MLP on the
  real tokens, the attention products over the batch's padded T; for a [CLS] classifier the last layer computes
  position 0 alone (`cls-only`), since 2026-12-05 evening with its attention from the inputs, without key / value
  projections (per sequence and head Wk^T q, the scores and the weighted sum over T, then Wv: `cpu_fastpath.py`
  `one_query_attention`; until then the keys and values of every token were projected and counted).
It prints the padded / real token ratio and the FLOP ratio of a training epoch (mean and range over
``--shuffles`` orders): the speed-up the layouts alone allow when both sides multiply at the same rate. Then
the whole run as benchmarks/finetuning.py times it: its epochs plus one evaluation after each (forward only,
batches of 64: HF in input order, each batch padded to its longest; lmforge sorted by length, padding-free,
[CLS]-only for classifiers; on CPU lmforge cuts a batch into smaller forwards, whose attention spans a
shorter padded length, so its evaluation count is an upper bound). No model is run. Results: docs/finetuning.md ("The bound, counted").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetuning as bench  # noqa: E402


def step_flops(lengths: list[int], H: int, F: int, layers: int, *, padded: bool, cls_only: bool,
               heads: int) -> float:
    """Matrix-product FLOPs of forward + backward over one batch of sequences of these real lengths."""
    T, n = max(lengths), len(lengths)
    rows = n * T if padded else sum(lengths)  # the rows the projections and the MLP run on
    per_row = 2 * (4 * H * H + 2 * H * F)
    attention = n * T * 4 * T * H
    if not cls_only:
        return 3 * layers * (rows * per_row + attention)
    # per sequence: q, Wk^T q, Wv z and the output projection (4 H x H), the MLP; per head the scores against the
    # T inputs and their weighted sum (2 x T x H each)
    last = n * 2 * (4 * H * H + 2 * H * F) + n * 4 * heads * T * H
    return 3 * ((layers - 1) * (rows * per_row + attention) + last)


def forward_flops(lengths: list[int], H: int, F: int, layers: int, *, padded: bool, cls_only: bool,
                  heads: int) -> float:
    """Matrix-product FLOPs of the forward alone (an evaluation batch)."""
    return step_flops(lengths, H, F, layers, padded=padded, cls_only=cls_only, heads=heads) / 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=["squad300", "cola", "sst2"], default=["squad300", "cola", "sst2"])
    ap.add_argument("--shuffles", type=int, default=20)
    ap.add_argument("--size", choices=list(bench.SIZES), default="mini")
    ap.add_argument("--rows", type=int, default=8000)
    args = ap.parse_args()
    from lmforge.objectives.base import group_by_length
    from lmforge.tasks import featurize_all, get_task

    paths = bench.prepare(Path(tempfile.mkdtemp(prefix="ftflops-")), bench.REFDATA, args.rows, args.size)
    tok = bench.hf_tokenizer(str(paths["model"]))  # until 2026-12-05 evening a 5-token one: see hf_tokenizer
    size = bench.SIZES[args.size]
    H, F, layers = size["hidden_size"], size["intermediate_size"], size["num_hidden_layers"]
    nh = size["num_attention_heads"]
    print(f"| task ({args.size}) | sequences | real tokens | HF padded / real tokens | HF FLOPs / lmforge FLOPs "
          f"| GFLOP an epoch, HF / lmforge | evaluation: HF / lmforge GFLOP | **whole run** (epochs + an evaluation "
          f"after each): HF / lmforge |\n|---|---|---|---|---|---|---|---|")
    for name in args.tasks:
        task_name, epochs, batch, length, _ = bench.TASKS[name]
        task = get_task(task_name, **({"doc_stride": 128} if task_name == "squad" else {}))
        feats, _ = featurize_all(task, task.read(paths[name], "train"), tok, max_length=length, training=True)
        lengths = np.array([len(f["input_ids"]) for f in feats])
        cls_only = task.kind != "span"
        pads, hf, lm = [], [], []
        for seed in range(args.shuffles):
            rng = np.random.default_rng(seed)
            shuffled = rng.permutation(len(lengths))
            grouped = group_by_length(rng.permutation(len(lengths)), lengths, batch_size=batch, chunk_batches=8,
                                      rng=rng)
            hf_batches = [lengths[shuffled[i:i + batch]].tolist() for i in range(0, len(lengths), batch)]
            lm_batches = [lengths[grouped[i:i + batch]].tolist() for i in range(0, len(lengths), batch)]
            pads.append(sum(max(b) * len(b) for b in hf_batches) / lengths.sum())
            hf.append(sum(step_flops(b, H, F, layers, padded=True, cls_only=False, heads=nh) for b in hf_batches))
            lm.append(sum(step_flops(b, H, F, layers, padded=False, cls_only=cls_only, heads=nh)
                          for b in lm_batches))
        ratios = [h / m for h, m in zip(hf, lm)]
        dev_ex = task.read(paths[name], task.eval_splits[0])
        dev = [len(f["input_ids"]) for f in featurize_all(task, dev_ex, tok, max_length=length)[0]]
        ordered = sorted(dev)  # lmforge's predict: sorted by length
        e = bench.EVAL_BATCH
        hf_eval = sum(forward_flops(dev[i:i + e], H, F, layers, padded=True, cls_only=False, heads=nh)
                      for i in range(0, len(dev), e))
        lm_eval = sum(forward_flops(ordered[i:i + e], H, F, layers, padded=False, cls_only=cls_only, heads=nh)
                      for i in range(0, len(dev), e))
        n_epochs = int(epochs)
        runs = [n_epochs * (h + hf_eval) / (n_epochs * (m + lm_eval)) for h, m in zip(hf, lm)]
        print(f"| {name} | {len(lengths):,} | {int(lengths.sum()):,} | {statistics.mean(pads):.2f}x "
              f"({min(pads):.2f}-{max(pads):.2f}) | **{statistics.mean(ratios):.2f}x** ({min(ratios):.2f}-"
              f"{max(ratios):.2f}) | {statistics.mean(hf) / 1e9:,.0f} / {statistics.mean(lm) / 1e9:,.0f} "
              f"| {hf_eval / 1e9:,.0f} / {lm_eval / 1e9:,.0f} ({len(dev):,} sequences) "
              f"| **{statistics.mean(runs):.2f}x** ({min(runs):.2f}-{max(runs):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
