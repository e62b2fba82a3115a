"""Greedy decoding speed, lmforge vs HF transformers ``generate``, same weights, fp32 CPU, with the memory floor.

Usage: python benchmarks/generation.py [--threads 2] [--new 128] [--prompt 32] [--shapes gpt2 tiny]
                                       [--batches 1 8] [--repeats 3]

For each shape (GPT-2 small with random weights, and a tiny GPT-2) and batch size, a random HF
GPT2LMHeadModel is saved and loaded into lmforge; both decode the same prompts greedily for --new tokens
(no eos, so every run makes exactly that many) and the two outputs are checked to be identical.

Fairness on a shared machine: one untimed warm-up call of each side per cell, then --repeats rounds in
which the two sides run back to back, alternating which goes first (A B, B A, ...), so a change of load
hits both; the table gives medians. ``tok/s`` = batch x new tokens / wall time of the whole call (prefill
included); ``ms/step`` is the decode steps alone (from the first new token to the last, timed by a
streamer on both sides), comparable with the floor.

The floor: a decode step must read every weight it multiplies by (all linear layers and the V x H LM
matrix, fp32) plus the KV cache once; at the measured read bandwidth of this machine (the median time of
summing a 1 GiB tensor, bigger than any cache) that takes ``floor ms/step``. Batch 1 is memory-bound, so no
implementation at fp32 can decode faster than the floor; a larger batch reads the same weights for more
rows and is bound by the GEMM kernels instead.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SHAPES = {  # name -> GPT2Config kwargs
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "tiny": dict(vocab_size=1000, n_positions=1024, n_embd=128, n_layer=2, n_head=2),
}


class StepClock:
    """A streamer for either library: remembers when each put() arrived (HF also puts the prompt first)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def decode_seconds_per_step(self, new: int) -> float:
        steps = self.times[-new:]  # the new tokens' arrivals; the first one closes the prefill
        return (steps[-1] - steps[0]) / (new - 1)


def read_bandwidth(gib: float = 1.0, repeats: int = 7) -> float:
    """Bytes/s of streaming reads (median of ``repeats`` sums of a ``gib`` GiB float32 tensor)."""
    x = torch.ones(int(gib * 2**30) // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / statistics.median(times)


def bytes_per_step(hf: Any, batch: int, context: int) -> int:
    """fp32 bytes a decode step must read: every matrix / vector parameter except the embedding tables
    (the LM matrix is the tied token table: read once, whole), plus K and V of ``context`` positions."""
    cfg = hf.config
    params = sum(p.numel() for n, p in hf.named_parameters() if not n.endswith(("wte.weight", "wpe.weight")))
    params += cfg.vocab_size * cfg.n_embd  # the LM product
    kv = 2 * cfg.n_layer * batch * cfg.n_embd * context
    return 4 * (params + kv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per cell (medians reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from lmforge.generation import generate
    from lmforge.models.model import Model

    bandwidth = read_bandwidth()
    print(f"read bandwidth: {bandwidth / 1e9:.1f} GB/s ({args.threads} threads)", flush=True)
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

            def run_hf(clock: StepClock) -> torch.Tensor:
                with torch.no_grad():
                    out = hf.generate(ids, attention_mask=mask, max_new_tokens=args.new, do_sample=False,
                                      streamer=clock)
                return out[:, args.prompt:]

            def run_ours(clock: StepClock) -> torch.Tensor:
                return generate(ours, ids, attention_mask=mask, max_new_tokens=args.new, streamer=clock)

            sides = {"hf": run_hf, "ours": run_ours}
            outputs = {name: fn(StepClock()) for name, fn in sides.items()}  # warm-up (allocator, kernels)
            wall: dict[str, list[float]] = {"hf": [], "ours": []}
            step: dict[str, list[float]] = {"hf": [], "ours": []}
            for r in range(args.repeats):
                for name in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
                    clock = StepClock()
                    start = time.perf_counter()
                    outputs[name] = sides[name](clock)
                    wall[name].append(time.perf_counter() - start)
                    step[name].append(clock.decode_seconds_per_step(args.new))
            same = bool(torch.equal(outputs["hf"], outputs["ours"]))
            n = batch * args.new
            t_hf, t_ours = statistics.median(wall["hf"]), statistics.median(wall["ours"])
            s_hf, s_ours = statistics.median(step["hf"]), statistics.median(step["ours"])
            floor = bytes_per_step(hf, batch, args.prompt + args.new // 2) / bandwidth
            rows.append((shape, batch, n / t_hf, n / t_ours, t_hf / t_ours, s_hf, s_ours, floor, same))
            print(f"{shape} batch {batch}: HF {n / t_hf:.1f} tok/s, lmforge {n / t_ours:.1f} tok/s, "
                  f"x{t_hf / t_ours:.2f}; decode ms/step HF {s_hf * 1e3:.1f}, lmforge {s_ours * 1e3:.1f}, "
                  f"floor {floor * 1e3:.1f}; same tokens: {same}", flush=True)
    print()
    print(f"Greedy decoding, fp32 CPU, {args.threads} threads, prompt {args.prompt}, {args.new} new tokens, "
          f"medians of {args.repeats} interleaved rounds; read bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(torch {torch.__version__}, transformers {transformers.__version__})")
    print()
    print("| shape | batch | HF tok/s | lmforge tok/s | speed-up | HF ms/step | lmforge ms/step | floor ms/step "
          "| same tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, batch, hf_tps, our_tps, ratio, s_hf, s_ours, floor, same in rows:
        print(f"| {shape} | {batch} | {hf_tps:.1f} | {our_tps:.1f} | {ratio:.2f}x | {s_hf * 1e3:.1f} "
              f"| {s_ours * 1e3:.1f} | {floor * 1e3:.1f} | {same} |")


if __name__ == "__main__":
    main()
