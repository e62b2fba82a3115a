"""Picking the int8 kernel that is fastest on this machine, by measuring it on the model's own layer shapes.

The kernels live in ``lmforge.nn.quantized`` (the one module the model runs); here they are timed side by
side with the float32 product, interleaved, and the fastest that runs is chosen. Kernels that cannot run
here are listed with the reason, never swapped in silently.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.nn.quantized import KERNELS, QuantizationError, available_kernels, get_kernel, quantize_rows

METHODS = ("int8", "int8-weight", "bf16")
# what each method is for, which decides how kernels are compared: int8-weight is the decode case (one row)
TIMED_ROWS = {"int8": (1, 256), "int8-weight": (1,)}


def _weights(model: nn.Module, *, every_layer: bool) -> list[torch.Tensor]:
    """The float weights of the body's Linear modules: of every layer (a one-row product is bound by reading
    them from memory, so the pass must not fit in the caches), or of the first layer only (many rows: bound
    by arithmetic, and every layer has the same shapes)."""
    root = model.body.layers if every_layer else model.body.layers[0]
    return [m.weight.detach().float() for m in root.modules() if isinstance(m, nn.Linear)]


def measure_kernels(model: nn.Module, method: str, *, repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Kernel name (and "float32") -> {"available", "why", "about", "ms_rows_<M>": median ms of one pass over
    the body's Linear weights with M input rows (every layer for M = 1, the first layer for more rows)}.
    Kernels and float32 are timed in turns, median of ``repeats``."""
    rows = TIMED_ROWS[method]
    why = available_kernels(method)
    table: dict[str, dict[str, Any]] = {"float32": {"available": True, "why": None, "about": "F.linear, float32"}}
    for name, reason in why.items():
        table[name] = {"available": reason is None, "why": reason, "about": KERNELS[method][name].about}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in rows:
            weights = _weights(model, every_layer=m == 1)
            quantized = [quantize_rows(w) for w in weights]
            runners: dict[str, Any] = {"float32": lambda xs, ws=weights: [F.linear(x, w) for x, w in zip(xs, ws)]}
            for name, reason in why.items():
                if reason is None:
                    kernel = KERNELS[method][name]
                    states = [kernel.prepare(q, s) for q, s in quantized]
                    runners[name] = (lambda xs, k=kernel, st=states, qs=quantized:
                                     [k.run(x, q, s, state) for x, (q, s), state in zip(xs, qs, st)])
            xs = [torch.randn(m, w.size(1), generator=generator) for w in weights]
            times: dict[str, list[float]] = {name: [] for name in runners}
            for name, run in runners.items():  # warm-up: packing, the fused kernel's compile
                run(xs)
            for _ in range(repeats):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run(xs)
                    times[name].append(time.perf_counter() - start)
            for name, values in times.items():
                table[name][f"ms_rows_{m}"] = statistics.median(values) * 1e3
    return table


def choose_kernel(table: dict[str, dict[str, Any]], method: str) -> str:
    """The available kernel with the smallest time relative to float32, summed over the timed row counts."""
    rows = TIMED_ROWS[method]
    base = table["float32"]
    scores = {name: sum(entry[f"ms_rows_{m}"] / base[f"ms_rows_{m}"] for m in rows)
              for name, entry in table.items() if name != "float32" and entry["available"]}
    if not scores:
        reasons = "; ".join(f"{n}: {e['why']}" for n, e in table.items() if n != "float32")
        raise QuantizationError(f"no {method} kernel runs on this machine ({reasons}); use --method bf16.")
    return min(scores, key=scores.__getitem__)


def quantize(model: nn.Module, method: str, *, kernel: str | None = "auto", repeats: int = 5
             ) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize ``model`` in place with ``method``; ``kernel="auto"`` measures the kernels and takes the fastest.
    Returns (model, {"kernel": name or None, "kernels": the measured table or {}})."""
    if method == "bf16":
        return model.quantize("bf16"), {"kernel": None, "kernels": {}}
    table: dict[str, dict[str, Any]] = {}
    if kernel == "auto":
        table = measure_kernels(model, method, repeats=repeats)
        kernel = choose_kernel(table, method)
    else:
        kernel = get_kernel(method, kernel).name  # a clear error for unknown / unusable names
    return model.quantize(method, kernel=kernel), {"kernel": kernel, "kernels": table}


__all__ = ["METHODS", "choose_kernel", "measure_kernels", "quantize"]
