"""Where one `finetune` run's wall clock goes, by phase (fixed per-run costs vs training steps).

    python benchmarks/finetune_phases.py [--task cola|squad|squad300|sst2] [--rows 8000] [--threads 1]

Builds the data and the random-init bert-mini HF checkpoint as benchmarks/finetuning.py does, runs
``finetune`` once in this process (one thread, cold feature cache) with the phases wrapped by a timer:
loading the tokenizer and the model, featurizing, the optimizer steps, the evaluations (``evaluate``: each
pass over a dev set), the best-model and final-model saves, ``loss.png`` and the outputs. What the phases do
not cover (building the optimizer, reading, logging) is the rest of the total. Writing the HF checkpoint
imports transformers, and with it torch._dynamo, so the lazy `import torch._dynamo` of torch.optim's first
use (1-2 s, paid by a real run) is not in these totals. Results: docs/finetuning.md, "Fixed per-run costs".
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetuning as bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(bench.TASKS), default="cola")
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    import torch

    import lmforge.recipes.finetune as ft
    import lmforge.train.loop as loop

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="ftphases-"))
    paths = bench.prepare(root, bench.REFDATA, args.rows, "mini")
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()

    def timed(owner, name: str) -> None:
        real = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
                calls[name] += 1
        setattr(owner, name, wrapper)

    for name in ("load_tokenizer", "load_model", "_featurize", "evaluate", "write_outputs"):
        timed(ft, name)
    timed(loop, "plot_loss")
    for name in ("_step", "_save_model_dir", "_save_final"):
        timed(loop.Trainer, name)
    task, epochs, batch, length, _ = bench.TASKS[args.task]
    os.environ["LMFORGE_CACHE"] = tempfile.mkdtemp(prefix="ftphases-cache-")
    config = ft.FinetuneConfig(
        model=str(paths["model"]), task=task, data=str(paths[args.task]), out=str(root / "out"), epochs=epochs,
        lr=bench.LR, warmup=bench.WARMUP, weight_decay=bench.WD, batch_size=batch, eval_batch_size=bench.EVAL_BATCH,
        max_length=length, seed=1, progress=False, device="cpu",
        task_options={"doc_stride": 128} if task == "squad" else {})
    t0, c0 = time.perf_counter(), time.process_time()
    scores = ft.finetune(config, log=lambda m: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{args.task}: wall {wall:.2f} s, CPU {cpu:.2f} s, load {bench.load()}; {scores}")
    for name, s in spent.items():
        print(f"  {name:16s} {s:6.2f} s  x{calls[name]}")
    print(f"  {'(the rest)':16s} {wall - sum(spent.values()):6.2f} s")


if __name__ == "__main__":
    main()
