"""Where a CPU decode step's time goes: lmforge's eager step vs HF's, op by op (torch.profiler).

Usage: python benchmarks/decode_profile.py [--batch 1] [--threads 1] [--steps 24] [--top 12] [--pack auto|off]

Both sides decode the same random GPT-2 small (fp32) greedily from the same 32-token prompts; after a
warm-up call, one generate call of --steps new tokens per side runs under the profiler (the sides
alternate twice, the second round is reported). The table gives each op's self CPU time per decode step
(the prefill is included but is one call of --steps); the last lines give the matrix products' share and
the weight-read rate they reach (fp32 weights read per step / GEMM time per step), against the streaming-read
rate of the machine measured right before that side ran (summing a 1 GiB tensor, best of 3): on a shared
machine the bandwidth changes from minute to minute, so the floor is measured next to what it bounds.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

GEMM_OPS = ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "mkl::_mkl_linear",
            "mkldnn::_linear_pointwise", "aten::mv", "aten::bmm")


def read_rate(probe: torch.Tensor, repeats: int = 3) -> float:
    """Bytes/s of summing ``probe``, the best of ``repeats`` (the benchmark's floor measure)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        probe.sum()
        best = min(best, time.perf_counter() - start)
    return probe.numel() * 4 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--pack", choices=["auto", "off"], default="auto",
                        help="lmforge's packed GEMMs (auto: the default of generate) or plain F.linear")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    from torch.profiler import ProfilerActivity, profile

    from lmforge.generation import generate
    from lmforge.models.model import Model

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = Model.from_pretrained(Path(d)).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, 32), generator=torch.Generator().manual_seed(1))
    pack = None if args.pack == "auto" else False
    sides = {
        "HF": lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.steps,
                                  do_sample=False),
        "lmforge": lambda: generate(ours, ids, max_new_tokens=args.steps, pack_weights=pack),
    }
    weights = sum(p.numel() for n, p in hf.named_parameters() if not n.endswith(("wte.weight", "wpe.weight")))
    weights = 4 * (weights + cfg.vocab_size * cfg.n_embd)
    print(f"GPT-2 small fp32, batch {args.batch}, {args.threads} thread(s), {args.steps} steps, load average "
          f"{os.getloadavg()}, torch {torch.__version__}, transformers {transformers.__version__}")
    results, bandwidth = {}, {}
    probe = torch.ones(2**28)  # 1 GiB: streaming reads, bigger than any cache
    with torch.no_grad():
        for side in sides.values():
            side()
        for _ in range(2):
            for name, side in sides.items():
                bandwidth[name] = read_rate(probe)  # measured next to the side: the machine as it is then
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    side()
                results[name] = prof.key_averages()
    for name, averages in results.items():
        rows = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in averages) / 1e3 / args.steps
        gemm = sum(e.self_cpu_time_total for e in averages if e.key in GEMM_OPS) / 1e3 / args.steps
        rate = weights / (gemm / 1e3)
        print(f"\n{name}: {total:.2f} ms of op self time per step; matrix products {gemm:.2f} ms "
              f"({100 * gemm / total:.0f}%), reading the {weights / 1e9:.3f} GB of weights at "
              f"{rate / 1e9:.1f} GB/s = {100 * rate / bandwidth[name]:.0f}% of the streaming-read rate measured "
              f"just before ({bandwidth[name] / 1e9:.1f} GB/s; floor {weights / bandwidth[name] * 1e3:.1f} ms/step)")
        print("| op | calls per step | self ms per step | share |")
        print("|---|---|---|---|")
        for e in rows[:args.top]:
            ms = e.self_cpu_time_total / 1e3 / args.steps
            print(f"| {e.key} | {e.count / args.steps:.1f} | {ms:.3f} | {100 * ms / total:.1f}% |")


if __name__ == "__main__":
    main()
