"""Run every side-by-side benchmark (lmforge vs HF transformers) in turn and print their tables.

    python benchmarks/run_all.py [--only tokenization pretraining generation electra serving] [--quick] [--device cuda]

Each benchmark is its own script (see its docstring for what it measures and its flags); this runner
starts each in a subprocess so one's memory and threads do not leak into the next, prints the machine
and date first (the README's tables carry both), and stops with the first failing script's exit code.
`--quick` passes each script the smallest settings that still produce its whole table; `--device cuda`
runs the pre-training and decoding benchmarks on the GPU (tokenization is CPU work either way).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, extra args for --quick)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "tokenization": ("tokenization.py", ["--skip-train", "--repeats", "2"]),
    "pretraining": ("pretraining.py", ["--steps", "3", "--warmup", "1"]),
    "generation": ("generation.py", ["--new", "32"]),
    "attention_scaling": ("attention_scaling.py", ["--lengths", "1024", "2048", "--model-lengths", "--repeats", "1",
                                                   "--flex-length", "0"]),
    "serving": ("serving.py", ["--quick", "--shapes", "tiny", "bert-base"]),
    "electra": ("electra.py", ["--steps", "2", "--warmup", "1"]),
    "compression": ("compression.py", ["--sections", "kernels", "decode", "encoder", "--new", "16", "--repeats", "1"]),
}

ON_DEVICE = ("pretraining", "generation", "attention_scaling")  # the scripts that take --device cpu|cuda


def machine() -> str:
    """One line: CPU model, cores, torch version, GPU when there is one."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="smallest settings that still print every table")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where pre-training and decoding run (default cpu)")
    args = ap.parse_args()
    print(f"# lmforge benchmarks, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine()}\n", flush=True)
    for name in args.only:
        script, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else [])]
        if name in ON_DEVICE:
            cmd += ["--device", args.device]
        print(f"## {name}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"benchmark {name} failed with exit code {rc}", file=sys.stderr)
            return rc
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
