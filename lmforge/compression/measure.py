"""What a compressed model costs, measured beside the original on the same machine in the same run.

Parameters and bytes (on disk and in memory), CPU latency of a forward pass at batch 1 and at batch 32 and,
for decoders, of greedy decoding at batch 1 — every model timed in turns (interleaved) and the median
taken, so a busy machine slows both sides alike — and the peak memory of a fresh process that loads the
model and runs one batch.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"


def count_parameters(model: nn.Module) -> int:
    """Stored numbers of the model's weights (int8 ones included, their per-row scales not), each tensor once."""
    seen: set[int] = set()
    total = 0
    for name, t in model.state_dict(keep_vars=True).items():
        if name.endswith("weight_scale") or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel()
    return total


def memory_bytes(model: nn.Module) -> int:
    """Bytes the model's tensors hold in memory (each tensor once)."""
    seen: set[int] = set()
    total = 0
    for t in model.state_dict(keep_vars=True).values():
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def disk_bytes(directory: str | Path) -> int | None:
    file = Path(directory) / WEIGHTS_NAME
    return file.stat().st_size if file.is_file() else None


def machine() -> dict[str, Any]:
    """The facts a timing needs beside it: CPU, cores, threads, load, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in load] if load else None, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _random_ids(config: Any, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = 1000 if config.vocab_size > 2000 else 0  # ordinary tokens, away from the special ids
    return torch.randint(low, config.vocab_size, (batch, length), generator=g)


@torch.no_grad()
def forward_latency(models: dict[str, nn.Module], *, batch: int, length: int, repeats: int = 5) -> dict[str, float]:
    """Model name -> median seconds of one forward of (batch, length) random ids; the models run in turns."""
    inputs = {name: _random_ids(m.config, batch, length) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, m in models.items():  # warm-up (packing, compiles, allocator)
        m.eval()
        m(inputs[name])
    for _ in range(repeats):
        for name, m in models.items():
            start = time.perf_counter()
            m(inputs[name])
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def decode_latency(models: dict[str, nn.Module], *, prompt: int = 32, new_tokens: int = 32,
                   repeats: int = 3) -> dict[str, float]:
    """Model name -> median seconds per new token of greedy decoding at batch 1 (prompt ``prompt`` tokens,
    ``new_tokens`` new ones; the prompt's forward counted in); the models decode in turns."""
    from lmforge.generation import generate

    context = min(m.config.max_length for m in models.values())
    prompt = min(prompt, context // 2)
    new_tokens = min(new_tokens, context - prompt)
    inputs = {name: _random_ids(m.config, 1, prompt, seed=1) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, m in models.items():
        generate(m, inputs[name], max_new_tokens=4)
    for _ in range(repeats):
        for name, m in models.items():
            start = time.perf_counter()
            out = generate(m, inputs[name], max_new_tokens=new_tokens, return_prompt=False)
            times[name].append((time.perf_counter() - start) / max(out.size(1), 1))
    return {name: statistics.median(t) for name, t in times.items()}


# VmHWM (this process's peak RSS, kB) where Linux has it: ru_maxrss survives exec, so a child started by a
# large parent would report the parent's size
_PEAK = r"""
import json, resource, sys, torch
def hwm():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
torch.set_num_threads(int(sys.argv[4]))
from lmforge.models.model import Model
with torch.device("meta"):  # a quantized model is built on the meta device: its one-time imports go in the base
    torch.nn.Linear(4, 4).weight.abs().amax(1).round()
base = hwm()
model = Model.from_pretrained(sys.argv[1]).eval()
loaded = hwm()
c = model.config
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000 if c.vocab_size > 2000 else 0, c.vocab_size, (int(sys.argv[2]), int(sys.argv[3])), generator=g)
with torch.no_grad():
    model(ids)
peak = hwm()
print(json.dumps({"base_kb": base, "loaded_kb": loaded, "peak_kb": peak}))
"""


def peak_memory(model_dir: str | Path, *, batch: int, length: int, threads: int) -> dict[str, float] | None:
    """Peak resident memory (MB) of a fresh process that loads ``model_dir`` ("load_mb") and then runs one
    (batch, length) forward ("peak_mb"), and what Python + torch + lmforge held before loading ("base_mb").
    None when the process fails (its error is not the compression's)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    try:
        done = subprocess.run([sys.executable, "-c", _PEAK, str(model_dir), str(batch), str(length), str(threads)],
                              capture_output=True, text=True, env=env, timeout=1800, check=True)
        kb = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError, OSError):
        return None
    return {"base_mb": kb["base_kb"] / 1024, "load_mb": kb["loaded_kb"] / 1024, "peak_mb": kb["peak_kb"] / 1024}


@torch.no_grad()
def sparse_vs_dense(model: nn.Module, *, rows: tuple[int, ...] = (1, 32), repeats: int = 5) -> dict[str, Any]:
    """For the largest Linear of the body: median ms of the dense product and of a CSR sparse product of the
    same (pruned) weight, at each row count; what ``magnitude`` pruning could gain with a sparse kernel."""
    linear = max((m for m in model.body.modules() if isinstance(m, nn.Linear)), key=lambda m: m.weight.numel())
    w = linear.weight.detach().float()
    with warnings.catch_warnings():  # torch marks sparse CSR as beta
        warnings.simplefilter("ignore", UserWarning)
        sparse = w.to_sparse_csr()
    out: dict[str, Any] = {"shape": list(w.shape), "sparsity": float((w == 0).float().mean())}
    for m in rows:
        x = torch.randn(w.size(1), m)
        runs = {"dense": lambda: w @ x, "csr": lambda: sparse @ x}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for f in runs.values():
            f()
        for _ in range(repeats):
            for k, f in runs.items():
                start = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - start)
        for k, t in times.items():
            out[f"{k}_ms_rows_{m}"] = statistics.median(t) * 1e3
    return out


__all__ = ["count_parameters", "decode_latency", "disk_bytes", "forward_latency", "machine", "memory_bytes",
           "peak_memory", "sparse_vs_dense"]
