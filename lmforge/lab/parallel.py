"""Independent arms of an experiment in 2 processes (one torch thread each), so a 2-core machine runs both at once.

``run_jobs`` keeps each worker process's CPU time; the runner adds the busiest worker's to the main process's own
to state what the run would take on a quiet 2-core machine (CPU time of a one-thread process = its wall clock
there), beside the measured wall clock and the total CPU time.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
MAKESPANS: list[float] = []  # per run_jobs call: the busiest worker's CPU seconds (reset by the runner)


def cpu_seconds(children: bool = True) -> float:
    """User + system CPU seconds of this process (and of its finished child processes)."""
    try:
        import resource
    except ImportError:  # not on POSIX: this process only
        return time.process_time()
    who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside (tiny models on shared cores), the caller's thread count back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int, float]:
    import torch

    torch.set_num_threads(1)
    result = fn(*args, **kwargs)
    return result, os.getpid(), cpu_seconds(children=False)


def run_jobs(jobs: Sequence[Job], *, workers: int = 2) -> list[Any]:
    """Each job's result, in order; ``workers`` > 1 runs them in that many fresh (spawned) processes, else here.
    Either way a job runs with one torch thread (tiny models on shared cores; the caller's count comes back after)."""
    if workers <= 1 or len(jobs) <= 1:
        with one_thread():
            return [fn(*args, **kwargs) for fn, args, kwargs in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_call, fn, args, kwargs) for fn, args, kwargs in jobs]
        done = [f.result() for f in futures]
    per_worker: dict[int, float] = {}
    for _, pid, cpu in done:  # a worker's CPU time only grows: its last job's reading is its total
        per_worker[pid] = max(per_worker.get(pid, 0.0), cpu)
    MAKESPANS.append(max(per_worker.values()))
    return [r for r, _, _ in done]
