"""Greedy decoding speed, lmforge vs HF transformers ``generate``, same weights, fp32 CPU.

Usage: python benchmarks/generation.py [--threads 2] [--new 128] [--prompt 32] [--shapes tiny gpt2]

For each shape (GPT-2 small with random weights, and a tiny GPT-2) and batch size (1, 8), a random HF
GPT2LMHeadModel is saved and loaded into lmforge, both decode the same prompts greedily for --new
tokens (no eos, so every run makes exactly that many), and the table gives tokens/s (batch x new
tokens / wall time, prefill included) and the ratio. The two outputs are checked to be identical.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {  # name -> GPT2Config kwargs
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "tiny": dict(vocab_size=1000, n_positions=1024, n_embd=128, n_layer=2, n_head=2),
}


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=2, help="best of N timed runs per cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from lmforge.generation import generate
    from lmforge.models.model import Model

    rows = []
    for shape in args.shapes:
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(**SHAPES[shape], bos_token_id=None, eos_token_id=None, pad_token_id=None)
        hf = transformers.GPT2LMHeadModel(cfg).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)
            ours = Model.from_pretrained(Path(d)).eval()
        for batch in args.batches:
            ids = torch.randint(0, cfg.vocab_size, (batch, args.prompt), generator=torch.Generator().manual_seed(1))
            mask = torch.ones_like(ids)

            def run_hf() -> torch.Tensor:
                with torch.no_grad():
                    return hf.generate(ids, attention_mask=mask, max_new_tokens=args.new, do_sample=False)[:, args.prompt:]

            def run_ours() -> torch.Tensor:
                return generate(ours, ids, attention_mask=mask, max_new_tokens=args.new)

            run_hf(), run_ours()  # warm-up (allocator, kernels)
            t_hf, ref = timed(run_hf, args.repeats)
            t_ours, got = timed(run_ours, args.repeats)
            same = bool(torch.equal(ref, got))
            n = batch * args.new
            rows.append((shape, batch, n / t_hf, n / t_ours, t_hf / t_ours, same))
            print(f"{shape} batch {batch}: HF {n / t_hf:.1f} tok/s, lmforge {n / t_ours:.1f} tok/s, "
                  f"x{t_hf / t_ours:.2f}, same tokens: {same}", flush=True)
    print()
    print(f"Greedy decoding, fp32 CPU, {args.threads} threads, prompt {args.prompt}, {args.new} new tokens "
          f"(torch {torch.__version__}, transformers {transformers.__version__})")
    print()
    print("| shape | batch | HF generate tok/s | lmforge tok/s | speed-up | same tokens |")
    print("|---|---|---|---|---|---|")
    for shape, batch, hf_tps, our_tps, ratio, same in rows:
        print(f"| {shape} | {batch} | {hf_tps:.1f} | {our_tps:.1f} | {ratio:.2f}x | {same} |")


if __name__ == "__main__":
    main()
