"""Tokenizer benchmark: lmforge vs the raw `tokenizers` engine vs HF transformers, same machine, same run.

1. Batch encoding of tiny-shakespeare lines (bert-base-uncased WordPiece, GPT-2 byte-level BPE), two
   settings: plain lists (ids + masks) and padded/truncated torch tensors. "raw" is the engine alone
   (`encode_batch` + reading the same fields), the floor any wrapper pays.
2. Peak RSS and wall time when training a 30k WordPiece vocabulary on ~100 MB of text (tiny-shakespeare
   lines repeated and shuffled into a temporary file), each trainer in its own subprocess, measured
   with resource.getrusage: lmforge (streamed, deterministic: two passes) vs the raw engine reading
   the file itself (`BertWordPieceTokenizer.train`).

    python benchmarks/tokenization.py [--mb 100] [--repeats 5] [--skip-train]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
REFDATA = REPO.parent / "shared" / "refdata"
sys.path.insert(0, str(REPO))


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (caches, thread pool)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def encode_table(repeats: int) -> list[dict[str, Any]]:
    import torch
    import transformers
    from tokenizers import Tokenizer as Engine

    from lmforge import Tokenizer

    lines = [t for t in (REFDATA / "text/tinyshakespeare.txt").read_text(encoding="utf-8").split("\n") if t]
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    n_tokens = 0
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

        def raw_lists() -> None:
            for b in batches:
                encs = raw.encode_batch(b)
                out = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
                if with_types:
                    out["token_type_ids"] = [e.type_ids for e in encs]

        def raw_tensors() -> None:
            for b in batches:
                encs = padded.encode_batch(b)
                out = {"input_ids": torch.tensor([e.ids for e in encs]),
                       "attention_mask": torch.tensor([e.attention_mask for e in encs])}
                if with_types:
                    out["token_type_ids"] = torch.tensor([e.type_ids for e in encs])

        settings = {
            "lists": (raw_lists, lambda: [ours(b) for b in batches], lambda: [hf(b) for b in batches]),
            "pt, pad+trunc 128": (
                raw_tensors,
                lambda: [ours(b, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
                         for b in batches],
                lambda: [hf(b, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
                         for b in batches]),
        }
        for setting, (fr, fo, fh) in settings.items():
            t_raw, t_ours, t_hf = best_of(fr, repeats), best_of(fo, repeats), best_of(fh, repeats)
            rows.append({"tokenizer": name, "setting": setting, "lines": len(lines), "tokens": n_tokens,
                         "raw_s": t_raw, "lmforge_s": t_ours, "hf_s": t_hf,
                         "lmforge_vs_raw": t_raw / t_ours, "hf_vs_raw": t_raw / t_hf})
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
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per encoder, best kept (default 5)")
    ap.add_argument("--skip-train", action="store_true", help="only the encoding table")
    args = ap.parse_args()

    rows = encode_table(args.repeats)
    print(f"Batch encoding, {rows[0]['lines']:,} tiny-shakespeare lines in batches of 1,000 (best of {args.repeats})")
    print("| tokenizer | output | tokens | raw engine s | lmforge s | HF fast s | lmforge / raw | HF / raw |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tokenizer']} | {r['setting']} | {r['tokens']:,} | {r['raw_s']:.3f} | {r['lmforge_s']:.3f} | "
              f"{r['hf_s']:.3f} | {r['lmforge_vs_raw']:.2f}x | {r['hf_vs_raw']:.2f}x |")
    print("(x = speed relative to the raw engine: 1.00x is as fast; target lmforge >= 0.90x)")
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
