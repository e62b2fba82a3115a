"""How many intra-op threads CPU training should use when other jobs share the cores.

Tiny models run thousands of small parallel regions per second; when another process keeps a core busy,
PyTorch's OpenMP threads wait on each other at every region and a 2-thread run on 2 cores becomes several
times slower than 1 thread (measured in docs/quickstart.md#threads). So a run that was not told a thread
count measures how busy the machine is and leaves the busy cores alone.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal of /proc/stat's "cpu" line


@dataclass
class ThreadChoice:
    threads: int
    busy_elsewhere: float | None  # cores other processes kept busy during the probe (None: not measurable)
    reason: str


def _cpu_jiffies() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(fields[i] for i in _BUSY_FIELDS if i < len(fields))
    return busy, int(own[11]) + int(own[12])  # this process's utime + stime


def busy_cores_elsewhere(seconds: float = 0.5) -> float | None:
    """Cores kept busy by other processes over ``seconds`` (Linux /proc; None elsewhere)."""
    first = _cpu_jiffies()
    if first is None:
        return None
    t = time.perf_counter()
    time.sleep(seconds)
    second = _cpu_jiffies()
    if second is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - t)
    return max(0.0, ((second[0] - first[0]) - (second[1] - first[1])) / ticks)


def choose_threads(requested: int | None = None, *, cores: int | None = None, probe_s: float = 0.5) -> ThreadChoice:
    """``requested`` (or OMP_NUM_THREADS) wins; else every core not kept busy by another process."""
    cores = cores or os.cpu_count() or 1
    if requested is not None:
        return ThreadChoice(max(1, requested), None, "as requested")
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit():
        return ThreadChoice(max(1, int(env)), None, "OMP_NUM_THREADS")
    busy = busy_cores_elsewhere(probe_s)
    if busy is None:
        return ThreadChoice(cores, None, "all cores (load not measurable here)")
    free = max(1, cores - round(busy))
    if free == cores:
        return ThreadChoice(cores, busy, "all cores (no other job running)")
    return ThreadChoice(free, busy, f"other processes keep {busy:.1f} of {cores} cores busy")
