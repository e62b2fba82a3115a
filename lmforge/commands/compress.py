"""`lmforge compress`: quantize (int8 / int8-weight / bf16) or prune (heads / MLP neurons / magnitude) a model,
with a before / after report (size, CPU latency, peak memory, quality)."""
from __future__ import annotations

import argparse

METHODS = ("int8", "int8-weight", "bf16", "prune-heads", "prune-ffn", "magnitude")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="lmforge model directory with its tokenizer")
    parser.add_argument("--method", required=True, choices=METHODS, metavar="METHOD",
                        help="int8: int8 weights + activations quantized at run time; int8-weight: weight-only "
                        "int8 (decoding); bf16; prune-heads / prune-ffn: remove the least important heads / MLP "
                        "neurons; magnitude: unstructured (required)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new directory for the model and report.md")
    parser.add_argument("--amount", type=float, default=0.5,
                        help="fraction of heads / neurons removed, or the sparsity of magnitude (default 0.5)")
    parser.add_argument("--kernel", default="auto", help="int8 kernel (see docs/compression.md); auto = the "
                        "fastest measured on this machine for this model")
    parser.add_argument("--eval-task", metavar="TASK", help="score by this task's metric (default: task.json)")
    parser.add_argument("--eval-data", metavar="DIR",
                        help="the task's data directory (default: none; give it or --eval-text)")
    parser.add_argument("--eval-text", metavar="FILE",
                        help="score perplexity on the second half of this text (calibrate on the first; default: none)")
    parser.add_argument("--eval-split", help="scored split (default: the task's dev split)")
    parser.add_argument("--calib-split", default="train", help="split that pruning scores heads on (default train)")
    parser.add_argument("--calib-examples", type=int, default=256, help="calibration examples (default 256)")
    parser.add_argument("--eval-examples", type=int, help="score at most this many examples (default: all)")
    parser.add_argument("--seq-len", type=int, default=128, help="text window and latency input length")
    parser.add_argument("--eval-tokens", type=int, default=32768, help="tokens of --eval-text per half (default 32768)")
    parser.add_argument("--recover-steps", type=int, default=0, help="fine-tuning steps after pruning")
    parser.add_argument("--recover-lr", type=float, default=5e-5, help="their learning rate (default 5e-5)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the batched latency and of scoring")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per latency (median; default 5)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory measurement (a fresh process per model)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmforge.recipes.compress import CompressConfig, compress

    config = CompressConfig(
        model=args.model, method=args.method, out=args.out, amount=args.amount, kernel=args.kernel,
        eval_task=args.eval_task, eval_data=args.eval_data, eval_text=args.eval_text, eval_split=args.eval_split,
        calib_split=args.calib_split, calib_examples=args.calib_examples, eval_examples=args.eval_examples,
        seq_len=args.seq_len, eval_tokens=args.eval_tokens, recover_steps=args.recover_steps, recover_lr=args.recover_lr,
        batch_size=args.batch_size, repeats=args.repeats, threads=args.threads, memory=args.memory,
        overwrite=args.overwrite)
    compress(config)
    print((Path(args.out) / "report.md").read_text())
    return 0
