"""Tokenizer benchmark: lmforge vs the raw `tokenizers` engine vs HF transformers, same machine, same run.

1. Batch encoding of tiny-shakespeare lines (bert-base-uncased WordPiece, GPT-2 byte-level BPE), two
   settings: plain lists (ids + masks) and padded/truncated torch tensors. "raw" is the engine alone
   (`encode_batch` + reading the same fields, + the same numpy -> torch conversion), the floor any
   wrapper pays. The three sides run in turn, round after round, and medians are reported, because
   the machine may be shared: set RAYON_NUM_THREADS / TOKENIZERS_PARALLELISM before running to pin the
   engine's threads (the header prints both).
2. Peak RSS and wall time when training a 30k WordPiece vocabulary on ~100 MB of text (tiny-shakespeare
   lines repeated and shuffled into a temporary file), each trainer in its own subprocess, measured
   with resource.getrusage: lmforge (streamed, deterministic: two passes) vs the raw engine reading
   the file itself (`BertWordPieceTokenizer.train`).

    python benchmarks/tokenization.py [--mb 100] [--rounds 5] [--skip-train]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
REFDATA = REPO.parent / "shared" / "refdata"
sys.path.insert(0, str(REPO))


def interleaved(sides: dict[str, Callable[[list[str]], Any]], batches: list[list[str]],
                rounds: int) -> dict[str, dict[str, list[list[float]]]]:
    """Wall and CPU seconds of every side on every batch, round after round: ``t[clock][side][round][batch]``.

    The sides take turns batch by batch (A B C, then B C A, ...), so a burst of load from other jobs on a
    shared machine lands on every side alike; results are dropped at once on every side. CPU time is
    the process's (all engine threads), which other jobs' load barely changes. One untimed warm-up
    round first (caches, thread pool).
    """
    names = list(sides)
    t: dict[str, dict[str, list[list[float]]]] = {c: {k: [] for k in names} for c in ("wall", "cpu")}
    for r in range(rounds + 1):
        for name in names:
            t["wall"][name].append([])
            t["cpu"][name].append([])
        for i, batch in enumerate(batches):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                w, c = time.perf_counter(), time.process_time()
                sides[name](batch)
                t["cpu"][name][-1].append(time.process_time() - c)
                t["wall"][name][-1].append(time.perf_counter() - w)
    for clock in t.values():  # drop the warm-up round
        for name in names:
            del clock[name][0]
    return t


def ratio(t: dict[str, list[list[float]]], base: str, other: str) -> float:
    """Median over (round, batch) of base time / other time, each pair measured back to back."""
    return statistics.median(a / b for ra, rb in zip(t[base], t[other]) for a, b in zip(ra, rb) if b > 0)


def encode_table(rounds: int) -> list[dict[str, Any]]:
    import numpy as np
    import torch
    import transformers
    from tokenizers import Tokenizer as Engine

    from lmforge import Tokenizer

    lines = [t for t in (REFDATA / "text/tinyshakespeare.txt").read_text(encoding="utf-8").split("\n") if t]
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    rows = []
    d = REFDATA / "tokenizers"
    for name, ours, hf in [
        ("bert-base-uncased", Tokenizer.from_pretrained(d / "bert-base-uncased"),
         transformers.BertTokenizerFast.from_pretrained(d / "bert-base-uncased")),
        ("gpt2", Tokenizer.from_pretrained(d / "gpt2"), transformers.GPT2TokenizerFast.from_pretrained(d / "gpt2")),
    ]:
        if ours.pad_token is None:
            ours.pad_token, hf.pad_token = ours.eos_token, hf.eos_token
        with_types = "token_type_ids" in ours.model_input_names
        raw = Engine.from_str(ours.backend.to_str())
        padded = Engine.from_str(ours.backend.to_str())
        padded.enable_truncation(128)
        padded.enable_padding(pad_id=ours.pad_token_id, pad_token=ours.pad_token, length=128)
        n_tokens = sum(len(e.ids) for b in batches for e in raw.encode_batch(b))

        def raw_lists(b: list[str]) -> dict[str, Any]:
            encs = raw.encode_batch(b)
            out = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
            if with_types:
                out["token_type_ids"] = [e.type_ids for e in encs]
            return out

        def as_pt(lists: list[list[int]]) -> Any:
            # the fastest list -> tensor route we know (the one lmforge uses), so that the ratio measures
            # the wrapper, not the conversion: torch.tensor(lists, dtype=torch.long) takes ~3x as long
            return torch.from_numpy(np.asarray(lists, dtype=np.int64))

        def raw_tensors(b: list[str]) -> dict[str, Any]:
            encs = padded.encode_batch(b)
            out = {"input_ids": as_pt([e.ids for e in encs]), "attention_mask": as_pt([e.attention_mask for e in encs])}
            if with_types:
                out["token_type_ids"] = as_pt([e.type_ids for e in encs])
            return out

        pt = dict(padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        settings = {
            "lists": (raw_lists, lambda b: ours(b), lambda b: hf(b)),
            "pt, pad+trunc 128": (raw_tensors, lambda b: ours(b, **pt), lambda b: hf(b, **pt)),
        }
        for setting, (fr, fo, fh) in settings.items():
            t = interleaved({"raw": fr, "lmforge": fo, "hf": fh}, batches, rounds)
            seconds = {k: statistics.median(sum(r) for r in v) for k, v in t["wall"].items()}
            per_round = [sum(a) / sum(b) for a, b in zip(t["wall"]["raw"], t["wall"]["lmforge"])]
            rows.append({"tokenizer": name, "setting": setting, "lines": len(lines), "tokens": n_tokens,
                         "raw_s": seconds["raw"], "lmforge_s": seconds["lmforge"], "hf_s": seconds["hf"],
                         "lmforge_vs_raw": ratio(t["wall"], "raw", "lmforge"),
                         "lmforge_vs_raw_rounds": (min(per_round), max(per_round)),
                         "lmforge_vs_raw_cpu": ratio(t["cpu"], "raw", "lmforge"),
                         "hf_vs_raw": ratio(t["wall"], "raw", "hf")})
    return rows


TRAIN_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
which, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if which == "lmforge":
    from lmforge import Tokenizer
    tok = Tokenizer.train(path, kind="wordpiece", vocab_size=30000, show_progress=False)
    size = len(tok)
else:
    from tokenizers.implementations import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train([path], vocab_size=30000, min_frequency=2, show_progress=False)
    size = tok.get_vocab_size()
wall = time.perf_counter() - t
print(json.dumps({{"which": which, "wall_s": wall, "vocab": size,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_corpus(path: Path, megabytes: float) -> int:
    lines = [t for t in (REFDATA / "text/tinyshakespeare.txt").read_text(encoding="utf-8").split("\n") if t]
    rng = random.Random(0)
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(lines)
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    return written


def train_table(megabytes: float) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        size = make_corpus(path, megabytes)
        for which in ("lmforge", "raw"):
            out = subprocess.run([sys.executable, "-c", TRAIN_CHILD.format(repo=str(REPO)), which, str(path)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["corpus_mb"] = size / 1e6
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="training corpus size in MB (default 100)")
    ap.add_argument("--rounds", "--repeats", type=int, default=5,  # --repeats: the old name (run_all.py)
                    help="interleaved rounds (raw, lmforge, HF in turn); medians reported (default 5)")
    ap.add_argument("--skip-train", action="store_true", help="only the encoding table")
    args = ap.parse_args()

    threads = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM"))
    rows = encode_table(args.rounds)
    print(f"Batch encoding, {rows[0]['lines']:,} tiny-shakespeare lines in batches of 1,000; {args.rounds} "
          f"interleaved rounds (raw, lmforge, HF in turn batch by batch), medians; {os.cpu_count()} CPUs; {threads}")
    print("| tokenizer | output | tokens | raw engine s | lmforge s | HF fast s | lmforge / raw | "
          "(rounds: min-max) | lmforge / raw, CPU time | HF / raw |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r["lmforge_vs_raw_rounds"]
        print(f"| {r['tokenizer']} | {r['setting']} | {r['tokens']:,} | {r['raw_s']:.3f} | {r['lmforge_s']:.3f} | "
              f"{r['hf_s']:.3f} | {r['lmforge_vs_raw']:.2f}x | {lo:.2f}-{hi:.2f} | {r['lmforge_vs_raw_cpu']:.2f}x | "
              f"{r['hf_vs_raw']:.2f}x |")
    print("(seconds: median over rounds of the wall time for all batches; x = speed relative to the raw engine,\n"
          " the median over every batch of every round of the back-to-back time ratio, 1.00x is as fast;\n"
          " rounds: the range of the whole-round wall ratios; target lmforge >= 0.90x)")
    if args.skip_train:
        return
    rows = train_table(args.mb)
    print(f"\nTraining a 30k WordPiece vocabulary on {rows[0]['corpus_mb']:.0f} MB of text (own subprocess each)")
    print("| trainer | vocab | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    names = {"lmforge": "lmforge Tokenizer.train (streamed, 2 passes, deterministic)",
             "raw": "raw engine BertWordPieceTokenizer.train (reads the file itself)"}
    for r in rows:
        print(f"| {names[r['which']]} | {r['vocab']:,} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    print("(target: lmforge peak RSS < 2,048 MB)")


if __name__ == "__main__":
    main()
