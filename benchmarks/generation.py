"""Greedy decoding speed, lmforge vs HF transformers ``generate``, same weights, fp32, with the memory floor.

Usage: python benchmarks/generation.py [--device cpu|cuda] [--modes eager compile graph] [--threads 2]
                                       [--new 128] [--prompt 32] [--shapes gpt2 tiny] [--batches 1 8]
                                       [--repeats 3] [--hf-static]

For each shape (GPT-2 small with random weights, and a tiny GPT-2) and batch size, a random HF
GPT2LMHeadModel is saved and loaded into lmforge; both decode the same prompts greedily for --new tokens
(no eos, so every run makes exactly that many) and the outputs are compared token for token.

lmforge runs in each of ``--modes``: ``eager`` (the default decode loop), ``compile`` (generate(...,
compile=True): the fixed-shape step under torch.compile, captured as a CUDA graph on GPU; on CPU one row's
products are Inductor GEMV reductions), ``compile-mm`` (the same without that rewrite) and ``graph``
(compile="graph": the eager step as a CUDA graph, GPU only). ``--hf-static`` adds HF's own fast path
(cache_implementation="static" with its compiled forward) as a second reference row.

Fairness on a shared machine: one untimed warm-up call of each side per cell (it also pays any compile),
then --repeats rounds in which the sides run back to back in rotating order, so a change of load hits
all of them; the table gives medians. ``tok/s`` = batch x new tokens / wall time of the whole call
(prefill included); the speed-up in CPU time is HF's process CPU time over the side's (with --threads 1 the
work done, whatever else runs on a shared machine); ``ms/step`` is the decode steps alone (from the first new token to the last, timed by a
streamer on both sides; on CUDA the streamer synchronises, as HF's own streamer does by copying each token
to the host), comparable with the floor.

The floor: a decode step must read every weight it multiplies by (all linear layers and the V x H LM
matrix, fp32) plus the KV cache once; at the measured read bandwidth (the best of 7: CPU, summing a
1 GiB tensor, bigger than any cache; CUDA, a 1 GiB device-to-device copy, bytes read + written) that takes
``floor ms/step``. Batch 1 is memory-bound, so no fp32 implementation can decode faster than the floor.
"""
from __future__ import annotations

import argparse
import os
import sys

if "--thp" in sys.argv:  # PyTorch reads it once, at its first allocation: before torch is imported
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SHAPES = {  # name -> GPT2Config kwargs
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12},
    "tiny": {"vocab_size": 1000, "n_positions": 1024, "n_embd": 128, "n_layer": 2, "n_head": 2},
}


class StepClock:
    """A streamer for either library: remembers when each put() arrived (HF also puts the prompt first).
    On CUDA it waits for the GPU first, so a time stamp means the token exists."""

    def __init__(self, cuda: bool = False) -> None:
        self.times: list[float] = []
        self.cuda = cuda

    def put(self, value: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def decode_seconds_per_step(self, new: int) -> float:
        steps = self.times[-new:]  # the new tokens' arrivals; the first one closes the prefill
        return (steps[-1] - steps[0]) / (new - 1)


def read_bandwidth(device: str, gib: float = 1.0, repeats: int = 7) -> float:
    """Bytes/s of streaming reads, the best of ``repeats`` (a floor is a best case): CPU, summing a ``gib``
    GiB float32 tensor; CUDA, a device-to-device copy of that size counting bytes read + written."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    if device == "cuda":
        y = torch.empty_like(x)
        times = []
        for _ in range(repeats + 1):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y.copy_(x)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        return 2 * x.numel() * 4 / min(times[1:])
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / min(times)


def bytes_per_step(hf: Any, batch: int, context: int) -> int:
    """fp32 bytes a decode step must read: every matrix / vector parameter except the embedding tables
    (the LM matrix is the tied token table: read once, whole), plus K and V of ``context`` positions."""
    cfg = hf.config
    params = sum(p.numel() for n, p in hf.named_parameters() if not n.endswith(("wte.weight", "wpe.weight")))
    params += cfg.vocab_size * cfg.n_embd  # the LM product
    kv = 2 * cfg.n_layer * batch * cfg.n_embd * context
    return 4 * (params + kv)


def same_prefix(a: torch.Tensor, b: torch.Tensor) -> str:
    """'yes', or how many leading tokens every row shares (fp32 rounding can flip a near-tie argmax)."""
    if torch.equal(a, b):
        return "yes"
    differs = (a != b).any(dim=0).nonzero()
    return f"first {int(differs[0])} of {a.shape[1]}"


def hf_side(hf: Any, ids: torch.Tensor, mask: torch.Tensor, new: int, static: bool) -> Any:
    """One timed HF generate call (``static``: its cache_implementation="static" compiled path)."""
    extra = {"cache_implementation": "static"} if static else {}

    def run(clock: StepClock) -> torch.Tensor:
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, streamer=clock, **extra)
        return out[:, ids.shape[1]:]
    return run


def our_side(ours: Any, ids: torch.Tensor, mask: torch.Tensor, new: int, mode: str) -> Any:
    """One timed lmforge generate call in ``mode`` (eager / compile / graph)."""
    from lmforge.generation import generate, static
    compile_arg = {"eager": False, "compile": True, "compile-mm": True, "graph": "graph"}[mode]

    def run(clock: StepClock) -> torch.Tensor:
        static.GEMV_REWRITE = mode != "compile-mm"  # compile-mm: Inductor without the one-row GEMV rewrite
        try:
            return generate(ours, ids, attention_mask=mask, max_new_tokens=new, streamer=clock, compile=compile_arg,
                            return_prompt=False)
        finally:
            static.GEMV_REWRITE = True
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile", "compile-mm", "graph"], default=None,
                        help="lmforge decoding modes to time (default: eager on CPU; eager graph compile on CUDA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per cell (medians reported)")
    parser.add_argument("--thp", action="store_true",
                        help="transparent huge pages for large tensors (THP_MEM_ALLOC_ENABLE=1), both sides")
    parser.add_argument("--hf-static", action="store_true",
                        help="also time HF generate with cache_implementation='static' (its compiled path)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    modes = args.modes or (["eager", "graph", "compile"] if cuda else ["eager"])

    import transformers

    from lmforge.models.model import Model

    bandwidth = read_bandwidth(args.device)
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    print(f"{where}: read bandwidth {bandwidth / 1e9:.1f} GB/s; load average {os.getloadavg()}; "
          f"THP_MEM_ALLOC_ENABLE={thp}", flush=True)
    rows = []
    for shape in args.shapes:
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(**SHAPES[shape], bos_token_id=None, eos_token_id=None, pad_token_id=None)
        hf = transformers.GPT2LMHeadModel(cfg).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)
            ours = Model.from_pretrained(Path(d)).eval().to(args.device)
        hf = hf.to(args.device)
        for batch in args.batches:
            ids = torch.randint(0, cfg.vocab_size, (batch, args.prompt), generator=torch.Generator().manual_seed(1))
            ids = ids.to(args.device)
            mask = torch.ones_like(ids)

            sides = {"HF": hf_side(hf, ids, mask, args.new, static=False)}
            if args.hf_static:
                sides["HF static"] = hf_side(hf, ids, mask, args.new, static=True)
            for mode in modes:
                sides[f"lmforge {mode}"] = our_side(ours, ids, mask, args.new, mode)
            outputs, wall, step, cpu = {}, {}, {}, {}
            for name, fn in list(sides.items()):  # warm-up (allocator, kernels, compiles)
                try:
                    outputs[name] = fn(StepClock(cuda))
                    wall[name], step[name], cpu[name] = [], [], []
                except Exception as error:  # noqa: BLE001 - report a side that cannot run, time the rest
                    print(f"{shape} batch {batch}: {name} failed: {type(error).__name__}: {error}"[:400], flush=True)
                    del sides[name]
            names = list(sides)
            for r in range(args.repeats):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    clock = StepClock(cuda)
                    if cuda:
                        torch.cuda.synchronize()
                    start, start_cpu = time.perf_counter(), time.process_time()
                    outputs[name] = sides[name](clock)
                    if cuda:
                        torch.cuda.synchronize()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
                    step[name].append(clock.decode_seconds_per_step(args.new))
            n = batch * args.new
            floor = bytes_per_step(hf, batch, args.prompt + args.new // 2) / bandwidth
            t_hf = statistics.median(wall["HF"])
            for name in names:
                t, s_ms = statistics.median(wall[name]), statistics.median(step[name]) * 1e3
                same = same_prefix(outputs["HF"], outputs[name])
                cpu_ratio = statistics.median(cpu["HF"]) / statistics.median(cpu[name])
                rows.append((shape, batch, name, n / t, t_hf / t, s_ms, floor * 1e3, same, cpu_ratio))
                print(f"{shape} batch {batch} {name}: {n / t:.1f} tok/s, x{t_hf / t:.2f} vs HF; decode "
                      f"{s_ms:.2f} ms/step (floor {floor * 1e3:.2f}); same tokens as HF: {same}", flush=True)
    print()
    print(f"load average at the end {os.getloadavg()}")
    print(f"Greedy decoding, fp32, {where}, prompt {args.prompt}, {args.new} new tokens, medians of "
          f"{args.repeats} interleaved rounds; read bandwidth {bandwidth / 1e9:.1f} GB/s (torch {torch.__version__}, "
          f"transformers {transformers.__version__})")
    print()
    print("| shape | batch | side | tok/s | speed-up vs HF | ms/step | floor ms/step | same tokens as HF | "
          "speed-up in CPU time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, batch, name, tps, ratio, s_ms, floor_ms, same, cpu_ratio in rows:
        print(f"| {shape} | {batch} | {name} | {tps:.1f} | {ratio:.2f}x | {s_ms:.2f} | {floor_ms:.2f} | {same} | "
              f"{cpu_ratio:.2f}x |")


if __name__ == "__main__":
    main()
