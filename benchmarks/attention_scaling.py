"""Long sequences: forward + backward time and peak memory against the sequence length, dense vs sparse.

    python benchmarks/attention_scaling.py [--lengths 512 1024 2048 4096 8192] [--model-lengths 1024 2048]
                                           [--repeats 2] [--model-repeats 1] [--threads 1] [--device cpu|cuda]
                                           [--flex-length 4096] [--plot FILE] [--json FILE]

Two scopes, all at bigbird-roberta-base's shape (H 768, 12 heads, FFN 3072, block 64, 3 random blocks),
batch 1, fp32, train mode (forward + backward of the output's sum), dropout 0 except where said:

* ``layer``: one attention sublayer (q / k / v / out projections, attention, residual + LayerNorm), the part
  whose cost differs: lmforge ``dense`` (SDPA: its flash kernel on CPU), ``dense+drop`` (attention dropout 0.1,
  what bigbird-roberta-base's config trains with: SDPA cannot fuse it on CPU, so the (T, T) scores exist; the
  lmforge CPU fast path), ``bigbird``, ``banded`` (causal, 256-key window) and HF ``BigBirdAttention`` in
  ``block_sparse`` mode with lmforge bigbird's weights (up to 704 tokens HF's model uses full attention, so the
  HF row does too there). ``dense+drop`` stops at 4096 (its scores alone would be ~10 GB at 8192).
* ``model``: the whole 12-layer base model (no head): lmforge dense / bigbird / banded (causal) and HF
  ``BigBirdModel(attention_type="block_sparse")`` loaded with lmforge bigbird's weights.

Per (scope, length) the sides take turns: one warm-up call each (measured for memory: the peak of the bytes
the CPU allocator holds during the call, from torch.profiler's memory events; on CUDA
``torch.cuda.max_memory_allocated``), then ``--repeats`` (``--model-repeats``) rounds of one timed call each,
the order reversed every round; the table gives each side's fastest round. lmforge bigbird and HF must agree
(max |output difference| printed; both draw HF's random blocks). The growth exponent is the least-squares
slope of log(time) and log(memory) against log(length) over the lengths >= 1024. The load average is printed
before and after, since the machine may be shared. A last table times bigbird's inference forward through the
gathered blocks and through FlexAttention, eager and compiled (``--flex-length``), on the chosen device.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SHAPE = dict(hidden_dropout=0.0, attention_dropout=0.0)
LAYER_KINDS = ("dense", "dense+drop", "bigbird", "banded", "hf-bigbird")
DROP_MAX = 4096  # longest "dense+drop" run
MODEL_KINDS = ("dense", "bigbird", "banded", "hf-bigbird")
COLORS = {"dense": "tab:blue", "dense+drop": "tab:orange", "bigbird": "tab:green", "banded": "tab:red",
          "hf-bigbird": "tab:purple"}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


# ------------------------------------------------------------------------------------------------ the sides
def lm_config(kind: str, length: int) -> Any:
    from lmforge import ModelConfig

    c = ModelConfig.from_preset("bigbird-roberta-base", max_positions=max(4096, length), **SHAPE)
    if kind.startswith("dense"):
        c = c.replace(attention_kind="dense", attention_dropout=0.1 if kind == "dense+drop" else 0.0)
    if kind == "banded":
        c = c.replace(attention_kind="banded", causal=True, attention_window=256)
    return c


class Sublayer(torch.nn.Module):
    """lmforge's attention sublayer as a post-LN block runs it: norm(x + attention(x))."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from lmforge.nn.attention import ATTENTION_KINDS

        self.attn = ATTENTION_KINDS[config.attention_kind](config, layer=0)
        self.norm = torch.nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.causal = config.causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lmforge.nn.attention import AttentionMask

        return self.norm(x + self.attn(x, mask=AttentionMask(None, self.causal))[0])


def hf_sublayer(reference: Sublayer, length: int, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """HF BigBirdAttention (self + output dense + LayerNorm) with ``reference``'s weights."""
    import transformers
    from transformers.models.big_bird.modeling_big_bird import BigBirdAttention, BigBirdModel

    config = transformers.BigBirdConfig(max_position_embeddings=max(4096, length), hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0, hidden_act="gelu_new")
    sparse = length > (5 + 2 * config.num_random_blocks) * config.block_size  # else HF's model runs full
    config.attention_type = "block_sparse" if sparse else "original_full"
    hf = BigBirdAttention(config, seed=0)
    H = config.hidden_size
    w, b = reference.attn.qkv.weight, reference.attn.qkv.bias
    with torch.no_grad():
        for i, name in enumerate(("query", "key", "value")):
            getattr(hf.self, name).weight.copy_(w[i * H:(i + 1) * H])
            getattr(hf.self, name).bias.copy_(b[i * H:(i + 1) * H])
        hf.output.dense.load_state_dict(reference.attn.out.state_dict())
        hf.output.LayerNorm.load_state_dict(reference.norm.state_dict())
    hf.to(device).train()
    ones = torch.ones(1, length, device=device)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(ones, config.block_size)

    def run(x: torch.Tensor) -> torch.Tensor:
        if not sparse:
            return hf(x)[0]
        return hf(x, band_mask=band, from_mask=from_mask, to_mask=to_mask, from_blocked_mask=blocked,
                  to_blocked_mask=blocked)[0]
    run.module = hf  # type: ignore[attr-defined]
    return run


def layer_sides(length: int, device: str) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.nn.Module]]]:
    torch.manual_seed(0)
    x = torch.randn(1, length, 768, device=device, requires_grad=True)
    sides: dict[str, Any] = {}
    reference = None
    for kind in LAYER_KINDS:
        if kind == "dense+drop" and length > DROP_MAX:
            continue  # (T, T) scores, probabilities and mask: ~10 GB at 8192 on a shared 23 GB machine
        if kind == "hf-bigbird":
            run = hf_sublayer(reference, length, device)
            sides[kind] = (lambda run=run: run(x), [run.module])
            continue
        module = Sublayer(lm_config(kind, length)).to(device).train()
        if reference is None:
            reference = module
        else:
            module.load_state_dict(reference.state_dict())
        sides[kind] = (lambda module=module: module(x), [module])
    return sides


def model_sides(length: int, device: str) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.nn.Module]]]:
    import transformers

    from lmforge import Model
    from lmforge.models import hf as hf_adapters

    torch.manual_seed(0)
    ids = torch.randint(5, 50000, (1, length), device=device)
    sides: dict[str, Any] = {}
    reference = None
    for kind in MODEL_KINDS:
        if kind == "hf-bigbird":
            adapter = hf_adapters.get_adapter("big_bird")
            fields = {k: v for k, v in adapter.config_to_hf(reference.config).items()
                      if k not in ("model_type", "architectures")}
            hf = transformers.BigBirdModel(transformers.BigBirdConfig(**fields)).to(device).train()
            hf.load_state_dict(adapter.to_hf(reference.state_dict(), reference.config))
            sides[kind] = (lambda hf=hf: hf(ids).last_hidden_state, [hf])
            continue
        model = Model(lm_config(kind, length)).to(device).train()
        if reference is None and kind == "bigbird":
            reference = model
        sides[kind] = (lambda model=model: model(ids).last_hidden_state, [model])
    # every lmforge side and HF with the same weights (the kind does not change the parameter names)
    state = reference.state_dict()
    for kind in ("dense", "banded"):
        sides[kind][1][0].load_state_dict(state)
    return sides


# ------------------------------------------------------------------------------------------------ measuring
def cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of the bytes the CPU allocator holds beyond the start during ``fn`` (torch.profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def step(forward: Callable[[], torch.Tensor], modules: list[torch.nn.Module], device: str) -> torch.Tensor:
    """One forward + backward; returns the output (detached) for the equality check."""
    for m in modules:
        m.zero_grad(set_to_none=True)
    y = forward()
    y.sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return y.detach()


def measure(sides: dict[str, Any], repeats: int, device: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {k: {"times": []} for k in sides}
    outputs = {}
    for kind, (forward, modules) in sides.items():  # warm-up, measured for memory
        try:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                outputs[kind] = step(forward, modules, device)
                out[kind]["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            else:
                holder: dict[str, torch.Tensor] = {}
                out[kind]["peak_mb"] = cpu_peak_bytes(lambda: holder.update(y=step(forward, modules, device))) / 2**20
                outputs[kind] = holder["y"]
        except (RuntimeError, MemoryError) as err:  # out of memory at the longest lengths
            out[kind] = {"error": str(err).splitlines()[0][:80], "times": []}
    order = [k for k in sides if "error" not in out[k]]
    for r in range(repeats):
        for kind in (order if r % 2 == 0 else order[::-1]):
            forward, modules = sides[kind]
            t = time.perf_counter()
            step(forward, modules, device)
            out[kind]["times"].append(time.perf_counter() - t)
    for kind in order:
        out[kind]["time_s"] = min(out[kind]["times"])
    if "bigbird" in outputs and "hf-bigbird" in outputs:
        out["hf-bigbird"]["max_diff_vs_lmforge"] = float((outputs["bigbird"] - outputs["hf-bigbird"]).abs().max())
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flex_table(length: int, repeats: int, device: str = "cpu") -> str:
    """Inference (no grad) of one bigbird attention module: gathered blocks vs FlexAttention, eager and compiled."""
    from lmforge.nn.attention import sparse

    torch.manual_seed(0)
    x = torch.randn(1, length, 768, device=device)
    reference = Sublayer(lm_config("bigbird", length)).to(device).eval()
    rows = []
    outputs = {}
    for name, impl, compiled in (("blocks", "blocks", False), ("flex, eager", "flex", False),
                                 ("flex, torch.compile", "flex", True)):
        module = Sublayer(lm_config("bigbird", length).replace(sparse_impl=impl)).to(device).eval()
        module.load_state_dict(reference.state_dict())
        sparse.COMPILE_FLEX = compiled
        with torch.no_grad():
            t = time.perf_counter()
            outputs[name] = module(x)  # the first call (compiles)
            sync(device)
            first = time.perf_counter() - t
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                module(x)
                sync(device)
                times.append(time.perf_counter() - t)
        diff = float((outputs[name] - outputs["blocks"]).abs().max())
        rows.append(f"| {name} | {first:.2f} s | {min(times):.3f} s | {diff:.1e} |")
    sparse.COMPILE_FLEX = None
    return "\n".join([f"**bigbird attention, forward only (no grad), {length} tokens, {device}**", "",
                      "| path | first call | fastest later call | max abs diff vs blocks |", "|---|---:|---:|---:|",
                      *rows])


def slope(points: list[tuple[int, float]]) -> float | None:
    pts = [(math.log(n), math.log(v)) for n, v in points if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def table(scope: str, results: dict[int, dict[str, dict[str, float]]], kinds: tuple[str, ...]) -> str:
    lines = [f"**{scope}**: forward + backward seconds / peak MB (fastest of the rounds)", "",
             "| length | " + " | ".join(kinds) + " | lmforge bigbird vs HF | max abs diff |",
             "|---:|" + "---:|" * len(kinds) + "---:|---:|"]
    for n, res in sorted(results.items()):
        cells = []
        for k in kinds:
            r = res.get(k, {})
            cells.append(f"{r['time_s']:.3f} s / {r['peak_mb']:,.0f}" if "time_s" in r else r.get("error", "-"))
        bb, hf = res.get("bigbird", {}), res.get("hf-bigbird", {})
        ratio = f"{hf['time_s'] / bb['time_s']:.2f}x" if "time_s" in bb and "time_s" in hf else "-"
        diff = f"{hf['max_diff_vs_lmforge']:.1e}" if "max_diff_vs_lmforge" in hf else "-"
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {ratio} | {diff} |")
    fits = []
    for k in kinds:
        pts_t = [(n, res[k]["time_s"]) for n, res in results.items() if n >= 1024 and "time_s" in res.get(k, {})]
        pts_m = [(n, res[k]["peak_mb"]) for n, res in results.items() if n >= 1024 and "peak_mb" in res.get(k, {})]
        st, sm = slope(pts_t), slope(pts_m)
        fits.append(f"{k} {st:.2f} / {sm:.2f}" if st is not None and sm is not None else f"{k} -")
    lines += ["", "growth exponent (time / memory, lengths >= 1024): " + "; ".join(fits)]
    return "\n".join(lines)


def plot(path: Path, all_results: dict[str, dict[int, dict[str, dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(all_results), 2, figsize=(11, 4.2 * len(all_results)), squeeze=False)
    for row, (scope, results) in enumerate(all_results.items()):
        kinds = LAYER_KINDS if scope == "layer" else MODEL_KINDS
        for col, (key, label) in enumerate((("time_s", "forward + backward (s)"), ("peak_mb", "peak memory (MB)"))):
            ax = axes[row][col]
            for k in kinds:
                pts = sorted((n, r[k][key]) for n, r in results.items() if key in r.get(k, {}))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k, color=COLORS[k])
            ns = sorted(results)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.set_xlabel("sequence length")
            ax.set_ylabel(label)
            ax.set_title(f"{'one attention layer' if scope == 'layer' else 'whole base model (12 layers)'}: {label}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--model-lengths", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per length, one layer")
    parser.add_argument("--model-repeats", type=int, default=1, help="timed rounds per length, whole model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--flex-length", type=int, default=4096, help="length of the FlexAttention table (0: none)")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="measure nothing: print the tables (and --plot) of a saved --json file")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {scope: {int(n): r for n, r in saved[scope].items()} for scope in ("layer", "model")}
        print(f"{saved['started']}; {saved['machine']}\n")
        print(table("one attention layer", results["layer"], LAYER_KINDS))
        if results["model"]:
            print()
            print(table("whole bigbird-roberta-base-shaped model", results["model"], MODEL_KINDS))
        if args.plot:
            plot(args.plot, {k: v for k, v in results.items() if v})
        return
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}; {machine(args.device)}; load average before: {load()}", flush=True)
    all_results: dict[str, dict[int, Any]] = {"layer": {}, "model": {}}
    for n in args.lengths:
        all_results["layer"][n] = measure(layer_sides(n, args.device), args.repeats, args.device)
        print(f"layer {n}: {json.dumps(all_results['layer'][n])}  (load {load()})", flush=True)
    for n in args.model_lengths:
        all_results["model"][n] = measure(model_sides(n, args.device), args.model_repeats, args.device)
        print(f"model {n}: {json.dumps(all_results['model'][n])}  (load {load()})", flush=True)
    flex = flex_table(args.flex_length, max(args.repeats, 2), args.device) if args.flex_length else ""
    print(f"\nload average after: {load()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(table("one attention layer", all_results["layer"], LAYER_KINDS))
    if all_results["model"]:
        print()
        print(table("whole bigbird-roberta-base-shaped model", all_results["model"], MODEL_KINDS))
    if flex:
        print()
        print(flex)
    if args.json:
        args.json.write_text(json.dumps({"started": started, "machine": machine(args.device), **all_results},
                                        indent=1))
    if args.plot:
        plot(args.plot, {k: v for k, v in all_results.items() if v})


if __name__ == "__main__":
    main()
