"""attention-scaling: time and memory of one attention sublayer against the sequence length, dense vs sparse.

One post-LN attention sublayer (norm(x + attention(x)), lmforge.nn.attention's modules, bigbird-roberta-base's
block size 64 and 3 random blocks, batch 1, fp32, forward + backward of the output's sum, one thread) for the
kinds dense (SDPA), dense with attention dropout (the (T, T) scores exist: what the O(n^2) claim is about),
bigbird (block sparse), banded (causal, 256-key window) and lsh (Reformer, chunk 64). The log-log slope of time
and of peak memory over the longer lengths is the measured exponent. benchmarks/attention_scaling.py is the
fuller version (base width, the whole 12-layer model, HF BigBird beside lmforge's); this one is sized for 2 cores.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from lmforge.lab.registry import Check, Log, Result

KINDS = ("dense", "dense+drop", "bigbird", "banded", "lsh")
LENGTHS, FAST_LENGTHS = (512, 1024, 2048, 4096, 8192), (256, 512)
WIDTH, FAST_WIDTH = 256, 64  # 4 heads of 64 (2 heads of 32 with --fast)
DROP_MAX = 4096


def config(kind: str, length: int, width: int) -> Any:
    from lmforge.config import ModelConfig

    c = ModelConfig.from_preset("bigbird-roberta-base", max_positions=max(4096, length), hidden_size=width,
                                num_heads=max(2, width // 64), intermediate_size=4 * width, hidden_dropout=0.0,
                                attention_dropout=0.0)
    if kind.startswith("dense"):
        c = c.replace(attention_kind="dense", attention_dropout=0.1 if kind == "dense+drop" else 0.0)
    elif kind == "banded":
        c = c.replace(attention_kind="banded", causal=True, attention_window=256)
    elif kind == "lsh":
        c = c.replace(attention_kind="lsh", lsh_chunk_length=64, num_hashes=1, num_buckets=None)
    return c


def sublayer(c: Any) -> Any:
    import torch

    from lmforge.nn.attention import ATTENTION_KINDS, AttentionMask

    class Sublayer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = ATTENTION_KINDS[c.attention_kind](c, layer=0)
            self.norm = torch.nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x + self.attn(x, mask=AttentionMask(None, c.causal))[0])

    return Sublayer().train()


def cpu_peak_mb(fn: Any) -> float:
    """Peak of the bytes the CPU allocator holds beyond the start during ``fn`` (torch.profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(value) over log(length): the growth exponent."""
    pts = [(math.log(n), math.log(v)) for n, v in points if v > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def measure(length: int, width: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per kind: peak MB of a warm-up step, then the fastest of ``repeats`` steps, the kinds taking turns."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(1, length, width, requires_grad=True)
    mods = {k: sublayer(config(k, length, width)) for k in KINDS if not (k == "dense+drop" and length > DROP_MAX)}

    def step(m: Any) -> None:
        m.zero_grad(set_to_none=True)
        m(x).sum().backward()

    res: dict[str, dict[str, Any]] = {k: {"peak_mb": cpu_peak_mb(lambda m=m: step(m)), "times": []}
                                      for k, m in mods.items()}
    for r in range(repeats):
        for k in (list(mods) if r % 2 == 0 else list(mods)[::-1]):
            t = time.perf_counter()
            step(mods[k])
            res[k]["times"].append(time.perf_counter() - t)
    return {k: {"time_s": min(v["times"]), "peak_mb": v["peak_mb"]} for k, v in res.items()}


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread

    lengths, width = (FAST_LENGTHS, FAST_WIDTH) if fast else (LENGTHS, WIDTH)
    with one_thread():
        results = {}
        for n in lengths:
            results[n] = measure(n, width, 1 if fast else 3)
            log(f"length {n}: " + ", ".join(f"{k} {v['time_s']:.3f} s / {v['peak_mb']:.0f} MB"
                                           for k, v in results[n].items()))
    rows = [{"length": n, **{f"{k} s": r[k]["time_s"] for k in KINDS if k in r},
             **{f"{k} MB": r[k]["peak_mb"] for k in KINDS if k in r}} for n, r in results.items()]
    fit_from = lengths[1] if len(lengths) > 2 else lengths[0]  # the shortest length is dominated by fixed costs
    exps = []
    for k in KINDS:
        pts = {key: [(n, r[k][key]) for n, r in results.items() if k in r and n >= fit_from]
               for key in ("time_s", "peak_mb")}
        exps.append({"kind": k, "time exponent": slope(pts["time_s"]), "memory exponent": slope(pts["peak_mb"]),
                     "fit over lengths": f"{fit_from}-{max(n for n, _ in pts['time_s'])}"})
    by = {e["kind"]: e for e in exps}

    def held(k: str, key: str, lo: float, hi: float) -> bool | None:
        v = by[k][key]
        return None if v is None or fast else lo <= v <= hi

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    checks = [
        Check("dense attention with materialized scores: memory grows as n^2", "exponent 2 (Vaswani table 1: O(n^2 d))",
              f"memory exponent {fmt(by['dense+drop']['memory exponent'])}, time {fmt(by['dense+drop']['time exponent'])}",
              held("dense+drop", "memory exponent", 1.6, 2.2),
              note="the (T, T) scores dominate only once T is several times the width"),
        Check("SDPA (flash) dense: memory linear, time still quadratic", "memory O(n) (FlashAttention), time O(n^2)",
              f"memory {fmt(by['dense']['memory exponent'])}, time {fmt(by['dense']['time exponent'])}",
              held("dense", "memory exponent", 0.7, 1.3)),
        Check("BigBird block-sparse attention: time linear", "O(n) (Zaheer et al. 2020, section 2)",
              f"time {fmt(by['bigbird']['time exponent'])}", held("bigbird", "time exponent", 0.7, 1.4)),
        Check("BigBird block-sparse attention: memory linear", "O(n) (Zaheer et al. 2020, section 2)",
              f"memory {fmt(by['bigbird']['memory exponent'])}", held("bigbird", "memory exponent", 0.7, 1.3)),
        Check("Reformer LSH attention: time O(n log n)", "O(n log n) (Kitaev et al. 2020, table 3)",
              f"time {fmt(by['lsh']['time exponent'])}", held("lsh", "time exponent", 0.7, 1.4)),
        Check("Reformer LSH attention: memory linear", "O(n) per chunk (Kitaev et al. 2020, table 3)",
              f"memory {fmt(by['lsh']['memory exponent'])}", held("lsh", "memory exponent", 0.7, 1.3)),
    ]
    notes = [f"One attention sublayer, hidden {width}, {max(2, width // 64)} heads, batch 1, fp32, forward + backward, "
             f"1 thread; time = fastest of {1 if fast else 3} rounds (kinds interleaved), memory = peak bytes the CPU "
             "allocator held during the warm-up step (torch.profiler). Exponents = log-log slopes from "
             f"length {fit_from} up.",
             "dense+drop (attention dropout 0.1) cannot use the fused SDPA kernel on CPU, so its (T, T) score matrix is "
             f"materialized; it stops at {DROP_MAX}. benchmarks/attention_scaling.py has the base-width and whole-model "
             "tables (docs/benchmarks)."]
    return Result(table=rows, checks=checks, notes=notes, tables={"growth exponents": exps},
                  data={"results": {str(n): r for n, r in results.items()}})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = {int(n): r for n, r in result.data["results"].items()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "time_s", "forward + backward (s)"), (axes[1], "peak_mb", "peak memory (MB)")):
        for k in KINDS:
            pts = sorted((n, r[k][key]) for n, r in res.items() if k in r)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("one attention sublayer vs sequence length")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
