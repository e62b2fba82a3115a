"""Compression, lmforge vs HF transformers fp32 on the same machine in the same run: speed at the issue's
shapes, and quality on small models trained here.

Usage: python benchmarks/compression.py [--sections kernels decode encoder quality] [--threads 2] [--repeats 3]
                                        [--new 64] [--work DIR] [--gpt-steps 600] [--bert-epochs 2]
                                        [--json FILE]

Speed (random weights; speed does not depend on them):
* ``kernels``: the table `lmforge compress --kernel auto` measures (lmforge.compression.quantize), at the
  GPT-2 small shape: every int8 / int8-weight kernel and float32 over the body's Linear weights.
* ``decode``: GPT-2 small shape (L12/H768, V 50,257), greedy decoding at batch 1, prompt 32 tokens, --new
  tokens: HF ``GPT2LMHeadModel.generate`` fp32 vs lmforge fp32 and the quantized variants (int8-weight with
  each of its kernels, int8, bf16), every side built from the same HF weights. tok/s = new tokens / wall
  time of the whole call (prefill included).
* ``encoder``: BERT-base shape, one forward of a 32 x 128 batch: HF ``BertForSequenceClassification`` fp32
  vs lmforge fp32, int8 (each kernel), bf16, and 50% of the heads pruned (6 of 12 per layer; fp32 and int8).
Each cell: one untimed warm-up per side, then --repeats rounds in which the sides run back to back in
rotating order (a change of load hits all of them); medians.

Quality (``quality``): the perplexity and task-metric figures need trained models.
* A GPT (L4/H128/A4, byte-level BPE of 2,048) pre-trained here on the first 90% of tiny-shakespeare for
  --gpt-steps steps with lmforge's own tokenizer / prepare / pretrain; `lmforge compress --eval-text` on the
  last 10% (it calibrates on the first half of that and scores perplexity on the second half).
* A small BERT (L2/H128/A4, the bert-base-uncased vocabulary) fine-tuned from a random init on the
  20k-sentence SST-2 sample (`lmforge finetune`, --bert-epochs); `lmforge compress --eval-data` on its
  dev sample (accuracy; calibration on the train split).
Every compression row is a `lmforge.recipes.compress.compress` run: its report.md sits in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GPT2 = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}
BERT = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "max_position_embeddings": 512, "num_labels": 2}


def machine() -> str:
    from lmforge.compression.measure import machine as facts

    m = facts()
    import transformers

    return (f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, load average {m['load_average']}, "
            f"torch {m['torch']} ({m['cpu_capability']}), transformers {transformers.__version__}, {m['date_utc']}")


def interleaved(sides: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each side's call; the sides run in rotating order each round after one warm-up."""
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        sides[n]()
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            sides[n]()
            times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def lmforge_variants(hf_dir: Path, head: str | None, specs: dict[str, tuple[str, str | None, Any]]) -> dict[str, Any]:
    """name -> lmforge model loaded from the HF directory and compressed as (method, kernel, heads to keep)."""
    from lmforge.compression.prune import prune
    from lmforge.models.model import Model

    models = {}
    for name, (method, kernel, keep) in specs.items():
        model = Model.from_pretrained(hf_dir, head=head).eval()
        if keep is not None:
            model = prune(model, heads=keep).eval()
        if method != "fp32":
            model.quantize(method, kernel=kernel)
        models[name] = model
    return models


# --------------------------------------------------------------------------- speed
@torch.no_grad()
def bench_decode(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).eval()
    hf_dir = work / "gpt2-small-random"
    hf.save_pretrained(hf_dir)
    specs = {"lmforge fp32": ("fp32", None, None), "int8-weight (fused)": ("int8-weight", "fused", None),
             "int8-weight (int8pack-bf16)": ("int8-weight", "int8pack-bf16", None),
             "int8 (fbgemm)": ("int8", "fbgemm", None), "bf16": ("bf16", None, None)}
    models = lmforge_variants(hf_dir, "clm", specs)
    prompt = torch.randint(1000, 50000, (1, 32), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(prompt)
    sides = {"HF fp32": lambda: hf.generate(prompt, attention_mask=mask, max_new_tokens=args.new,
                                            min_new_tokens=args.new, do_sample=False, pad_token_id=50256)}
    for name, m in models.items():
        sides[name] = lambda m=m: m.generate(prompt, max_new_tokens=args.new)
    times = interleaved(sides, args.repeats)
    base = times["HF fp32"]
    return [{"side": n, "tok_s": args.new / t, "ms_per_token": t / args.new * 1e3, "speedup_vs_hf": base / t}
            for n, t in times.items()]


def bench_kernels(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The kernel table `lmforge compress --kernel auto` measures, at the GPT-2 small shape."""
    from lmforge.compression.quantize import measure_kernels
    from lmforge.models.model import Model

    torch.manual_seed(0)
    model = Model.from_preset("gpt2", head="clm")
    rows = []
    for method in ("int8-weight", "int8"):
        for name, e in measure_kernels(model, method, repeats=args.repeats).items():
            rows.append({"method": method, "kernel": name, "about": e["about"] if e["available"] else e["why"],
                         "ms_rows_1": e.get("ms_rows_1"), "ms_rows_256": e.get("ms_rows_256")})
    return rows


@torch.no_grad()
def bench_encoder(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import transformers

    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**BERT)).eval()
    hf_dir = work / "bert-base-random"
    hf.save_pretrained(hf_dir)
    half = [list(range(0, 12, 2))] * 12  # 6 of 12 heads in every layer: the speed does not depend on which
    specs = {"lmforge fp32": ("fp32", None, None), "int8 (fbgemm)": ("int8", "fbgemm", None),
             "int8 (onednn)": ("int8", "onednn", None), "int8 (int-mm)": ("int8", "int-mm", None),
             "bf16": ("bf16", None, None), "prune-heads 50%": ("fp32", None, half),
             "prune-heads 50% + int8 (fbgemm)": ("int8", "fbgemm", half)}
    models = lmforge_variants(hf_dir, "seq-cls", specs)
    ids = torch.randint(1000, 30000, (32, 128), generator=torch.Generator().manual_seed(1))
    sides = {"HF fp32": lambda: hf(input_ids=ids)}
    for name, m in models.items():
        sides[name] = lambda m=m: m(ids)
    times = interleaved(sides, args.repeats)
    base = times["HF fp32"]
    return [{"side": n, "ms": t * 1e3, "sequences_s": 32 / t, "speedup_vs_hf": base / t} for n, t in times.items()]


# --------------------------------------------------------------------------- quality
def lmforge_cli(*argv: str, log: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("a") as f:
        f.write(f"$ lmforge {' '.join(argv)}\n")
        f.flush()
        subprocess.run([sys.executable, "-m", "lmforge", *argv], check=True, env=env, stdout=f, stderr=subprocess.STDOUT)


def train_shakespeare_gpt(args: argparse.Namespace, work: Path, log: Path) -> tuple[Path, Path]:
    """(model dir, held-out text): a small GPT pre-trained on the first 90% of tiny-shakespeare."""
    text = (REPO / ".." / "shared" / "refdata" / "text" / "tinyshakespeare.txt").resolve().read_text()
    cut = text.rfind("\n\n", 0, int(len(text) * 0.9))
    train, held = work / "shakespeare-train.txt", work / "shakespeare-heldout.txt"
    train.write_text(text[:cut])
    held.write_text(text[cut:])
    model_dir = work / "gpt-shakespeare"
    if (model_dir / "model.safetensors").is_file():
        return model_dir, held
    lmforge_cli("tokenizer", "train", "--kind", "bpe", "--vocab-size", "2048", "--out", str(work / "bpe"), str(train),
                log=log)
    lmforge_cli("prepare", "--tokenizer", str(work / "bpe"), "--out", str(work / "shards"), "--doc-mode", "blank",
                str(train), log=log)
    config = work / "gpt-small.json"
    config.write_text(json.dumps({"preset": "gpt2", "num_layers": 4, "hidden_size": 128, "num_heads": 4,
                                  "intermediate_size": 512, "max_positions": 256, "hidden_dropout": 0.0,
                                  "attention_dropout": 0.0}))
    lmforge_cli("pretrain", "--model", str(config), "--objective", "clm", "--data", str(work / "shards"), "--out",
                str(model_dir), "--max-steps", str(args.gpt_steps), "--batch-size", "16", "--seq-len", "128",
                "--lr", "2e-3", "--save-every", str(args.gpt_steps), log=log)
    return model_dir, held


def finetune_sst2_bert(args: argparse.Namespace, work: Path, log: Path) -> tuple[Path, Path]:
    """(fine-tuned model, data dir): a small BERT (L2/H128/A4, the bert-base-uncased vocabulary) fine-tuned
    from a random init on the 20k-sentence SST-2 sample with `lmforge finetune`."""
    from lmforge.models.model import Model

    data = (REPO / ".." / "shared" / "refdata" / "glue" / "SST-2").resolve()
    out = work / "bert-sst2"
    if (out / "task.json").is_file():
        return out, data
    init = work / "bert-small-init"
    torch.manual_seed(0)
    Model.from_preset("bert-tiny", head="seq-cls", num_labels=2, num_heads=4).save_pretrained(init)
    vocab = (REPO / ".." / "shared" / "refdata" / "tokenizers" / "bert-base-uncased" / "vocab.txt").resolve()
    (init / "vocab.txt").write_bytes(vocab.read_bytes())
    lmforge_cli("finetune", "--model", str(init), "--task", "glue-sst2", "--data", str(data), "--out", str(out),
                "--epochs", str(args.bert_epochs), "--lr", "5e-4", "--batch-size", "32", "--max-length", "64", log=log)
    return out, data


def compress_rows(model: Path, out_root: Path, runs: list[tuple[str, list[str]]], data: list[str],
                  repeats: int) -> list[dict[str, Any]]:
    from lmforge.recipes.compress import CompressConfig, compress

    rows = []
    for label, extra in runs:
        flags = dict(zip(extra[0::2], extra[1::2]))
        config = CompressConfig(model=str(model), out=str(out_root / label.replace(" ", "_").replace("%", "")),
                                method=flags.pop("--method"), repeats=repeats, overwrite=True,
                                **{k.lstrip("-").replace("-", "_"): _num(v) for k, v in {**flags, **dict(
                                    zip(data[0::2], data[1::2]))}.items()})
        report = compress(config)
        main = report["quality_main"]
        rows.append({"run": label, "kernel": report.get("kernel"), "metric": main,
                     "before": report["before"]["quality"][main], "after": report["after"]["quality"][main],
                     "disk_mb": (report["before"]["disk_mb"], report["after"]["disk_mb"]),
                     "latency_b1_ms": (report["before"]["latency_b1_ms"], report["after"]["latency_b1_ms"]),
                     "latency_b32_ms": (report["before"]["latency_b32_ms"], report["after"]["latency_b32_ms"]),
                     "decode_ms_per_token": (report["before"].get("decode_ms_per_token"),
                                             report["after"].get("decode_ms_per_token")),
                     "report": str(Path(config.out) / "report.md")})
    return rows


def _num(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def bench_quality(args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    log = work / "quality.log"
    gpt, held = train_shakespeare_gpt(args, work, log)
    text = ["--eval-text", str(held), "--eval-tokens", "65536"]
    gpt_rows = compress_rows(gpt, work / "gpt-compressed", [
        ("int8-weight", ["--method", "int8-weight"]), ("int8", ["--method", "int8"]), ("bf16", ["--method", "bf16"]),
        ("prune-heads 50%", ["--method", "prune-heads", "--amount", "0.5"]),
        ("prune-heads 50% + 200 recovery steps", ["--method", "prune-heads", "--amount", "0.5",
                                                  "--recover-steps", "200", "--recover-lr", "3e-4"]),
        ("prune-ffn 50%", ["--method", "prune-ffn", "--amount", "0.5"]),
        ("magnitude 50%", ["--method", "magnitude", "--amount", "0.5"]),
    ], text, args.repeats)
    bert, data = finetune_sst2_bert(args, work, log)
    task = ["--eval-data", str(data)]
    bert_rows = compress_rows(bert, work / "bert-compressed", [
        ("int8", ["--method", "int8"]), ("int8 (int-mm, per-token)", ["--method", "int8", "--kernel", "int-mm"]),
        ("bf16", ["--method", "bf16"]),
        ("prune-heads 50%", ["--method", "prune-heads", "--amount", "0.5"]),
        ("prune-heads 50% + 200 recovery steps", ["--method", "prune-heads", "--amount", "0.5",
                                                  "--recover-steps", "200", "--recover-lr", "5e-5"]),
        ("prune-ffn 50%", ["--method", "prune-ffn", "--amount", "0.5"]),
    ], task, args.repeats)
    return {"gpt": gpt_rows, "bert": bert_rows}


# --------------------------------------------------------------------------- output
def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, tuple):
            return " -> ".join(cell(x) for x in v)
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=["kernels", "decode", "encoder", "quality"],
                        choices=["kernels", "decode", "encoder", "quality"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new", type=int, default=64, help="new tokens per decode call")
    parser.add_argument("--gpt-steps", type=int, default=600, help="pre-training steps of the quality GPT")
    parser.add_argument("--work", help="directory for models and reports (default: a temporary one)")
    parser.add_argument("--bert-epochs", type=float, default=2, help="fine-tuning epochs of the quality BERT")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmforge-compress-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine_start": machine(), "python": platform.python_version()}
    print(f"machine: {results['machine_start']}\nwork: {work}", flush=True)
    if "decode" in args.sections:
        rows = results["decode"] = bench_decode(args, work)
        print(f"\nGPT-2 small shape, greedy decode, batch 1, prompt 32, {args.new} new tokens:\n" + table(
            rows, [("side", "side"), ("tok_s", "tok/s"), ("ms_per_token", "ms/token"),
                   ("speedup_vs_hf", "x HF fp32")]), flush=True)
    if "kernels" in args.sections:
        rows = results["kernels"] = bench_kernels(args, work)
        print("\nKernels on the GPT-2 small body (one pass over all 48 Linear layers at 1 row; the first layer's "
              "4 at 256 rows; median ms):\n" + table(rows, [("method", "method"), ("kernel", "kernel"),
                                                            ("ms_rows_1", "1 row"), ("ms_rows_256", "256 rows"),
                                                            ("about", "what runs")]), flush=True)
    if "encoder" in args.sections:
        rows = results["encoder"] = bench_encoder(args, work)
        print("\nBERT-base shape, seq-cls forward, batch 32 x 128:\n" + table(
            rows, [("side", "side"), ("ms", "ms"), ("sequences_s", "sequences/s"),
                   ("speedup_vs_hf", "x HF fp32")]), flush=True)
    if "quality" in args.sections:
        q = results["quality"] = bench_quality(args, work)
        columns = [("run", "run"), ("kernel", "kernel"), ("metric", "metric"), ("before", "before"),
                   ("after", "after"), ("disk_mb", "MB"), ("latency_b1_ms", "forward b1 ms"),
                   ("latency_b32_ms", "forward b32 ms"), ("decode_ms_per_token", "decode ms/token")]
        print("\nGPT L4/H128 pre-trained on tiny-shakespeare, perplexity on held-out text:\n"
              + table(q["gpt"], columns), flush=True)
        print("\nsmall BERT fine-tuned on the SST-2 sample, dev accuracy:\n"
              + table(q["bert"], columns), flush=True)
    results["machine_end"] = machine()
    print(f"\nmachine at the end: {results['machine_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
