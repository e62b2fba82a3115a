"""The SIGKILL campaign: kill a small CPU training run at random moments, resume it, and check that the
final weights are bitwise identical to an uninterrupted run.

    python benchmarks/faults.py                       # 20 kills of one process + 3 of one rank under torchrun
    python benchmarks/faults.py --kills 4 --torchrun-kills 0 --json out.json
    python benchmarks/faults.py --exit-runs 40         # short torchrun runs: do exits fail, with / without teardown?

The run is ``tests/train/toy.py --model gpt``: a 2-layer lmforge GPT (tied embeddings, dropout 0.1, so the
RNG state matters) trained by the real Trainer with real checkpoints every 5 steps. Every 4th kill lands
inside a checkpoint write (the write pauses before its manifest, the kill comes during the pause: files
half there); the others at a uniformly random point of the training (a random step, a random moment in
it, placed by the run's progress so that load on the machine cannot push it past the end). Half the single-process kills use
sharded (``--distributed fsdp``, DCP) checkpoints, half plain ones. Under torchrun (2 processes, FSDP)
one rank is SIGKILLed; torchrun stops the other; ``--resume`` under torchrun continues.

Each kill is followed by one ``--resume`` run to the end; a kill before the first checkpoint restarts
from step 0. A row passes when model.safetensors is byte-identical to the uninterrupted run's and
metrics.jsonl lists every step once with the same losses. Exit status 1 if any row fails.
The other faults (damaged checkpoints, ENOSPC, NaN, SIGTERM, malformed inputs) are tests/faults/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "train" / "toy.py"
SAVE_EVERY, SLEEP = 5, 0.02


@dataclass(frozen=True)
class Plan:
    steps: int = 40  # optimizer steps of the run
    pause: float = 0.3  # seconds each checkpoint write pauses before its manifest


@dataclass
class Kill:
    n: int
    launcher: str  # "python" | "torchrun x2"
    checkpoints: str  # "plain" | "sharded"
    moment: str  # "random" | "checkpoint write"
    killed_at_s: float  # seconds after the start
    steps_logged: int  # steps in metrics.jsonl when killed
    in_write: bool  # a checkpoint temporary existed at the kill
    resumed_from: int  # the checkpoint step the resume started from (0: none)
    identical: bool  # final weights bitwise equal, same losses
    note: str = ""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cmd(out: Path, fmt: str, procs: int, plan: Plan, *extra: str) -> list[str]:
    launch = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(procs)]
    fmt_args = ["--distributed", "fsdp"] if fmt == "sharded" else []
    # 2 processes: a global batch of 16 (2 x 8); one process: the default batch of 8
    batch = ["--global-batch", "16"] if procs > 1 else []
    return [*launch, str(TOY), str(out), "--model", "gpt", "--dropout", "0.1", "--steps", str(plan.steps),
            "--save-every", str(SAVE_EVERY), "--sleep", str(SLEEP), "--save-pause", str(plan.pause), *fmt_args, *batch,
            *extra]


def _train_records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by the kill
            continue
    return [r for r in rows if r.get("split") == "train"]


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _in_write(out: Path) -> bool:
    root = out / "checkpoints"
    return root.is_dir() and any(p.name.startswith(".tmp-") for p in root.iterdir())


def one_kill(n: int, ref: Path, work: Path, *, fmt: str, procs: int, moment: str, at: float,
             rng: random.Random, plan: Plan) -> Kill:
    """Start a run, SIGKILL it (a rank of it under torchrun) at ``at`` (a fractional step: when step
    ``int(at)`` has been logged, plus that fraction of a step's time) or inside a checkpoint write, resume
    it to the end and compare with ``ref``. Progress, not wall time, places the kill: the machine's load
    cannot push it past the end of the run."""
    out = work / f"kill-{n:02d}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.Popen(_cmd(out, fmt, procs, plan), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    note = ""
    if moment == "checkpoint write":
        # the k-th write: wait for its temporary to appear, then kill within the pause
        k = rng.randint(1, plan.steps // SAVE_EVERY - 1)
        seen, was = 0, False
        while proc.poll() is None and seen < k:
            now = _in_write(out)
            seen += now and not was
            was = now
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, plan.pause * 0.8))
    else:
        step, fraction = int(at), at - int(at)
        while proc.poll() is None and len(_train_records(out)) < step:
            time.sleep(0.002)
        per_step = SLEEP * 1.5  # about a step's time (the run sleeps SLEEP per micro-batch)
        time.sleep(fraction * per_step)
    if procs == 1:
        victim = proc.pid
    else:  # one rank: a worker of torchrun's agent
        workers = _children(proc.pid)
        victim = rng.choice(workers) if workers else proc.pid
    in_write, logged = _in_write(out), len(_train_records(out))
    killed_at = time.monotonic() - start
    finished = proc.poll() is not None
    if not finished:
        os.kill(victim, signal.SIGKILL)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if finished or (out / "model.safetensors").is_file():
        note = "the run ended before the kill"
    res = subprocess.run(_cmd(out, fmt, procs, plan, "--resume"), env=_env(), capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0:
        if not (out / "model.safetensors").is_file():  # the resumed run itself failed: the campaign stops here
            raise RuntimeError(f"the resumed run failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
        # it finished and wrote its model, then a process died on the way out (seen under torchrun + gloo:
        # "terminate called without an active exception"): a row of its own, weights still compared
        said = "terminate called without an active exception" in res.stderr
        note = (note + "; " if note else "") + (f"finished, then the exit failed (rc {res.returncode}"
                                                f"{': terminate called without an active exception' if said else ''})")
    found = re.search(r"resumed from \S*step-(\d+)", res.stdout)
    resumed = int(found.group(1)) if found else 0
    fallback = re.findall(r"checkpoint (step-\d+) is damaged", res.stdout)
    if fallback:
        note = (note + "; " if note else "") + f"fell back past damaged {', '.join(fallback)}"
    same = (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    rows, ref_rows = _train_records(out), _train_records(ref)
    same = same and [r["step"] for r in rows] == list(range(1, plan.steps + 1)) and \
        [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    shutil.rmtree(out, ignore_errors=True)
    return Kill(n=n, launcher="python" if procs == 1 else f"torchrun x{procs}", checkpoints=fmt, moment=moment,
                killed_at_s=round(killed_at, 2), steps_logged=logged, in_write=in_write, resumed_from=resumed,
                identical=same, note=note)


def _reference(out: Path, fmt: str, procs: int, plan: Plan) -> tuple[float, float]:
    """The uninterrupted run: (seconds to its first logged step, seconds in all)."""
    start = time.monotonic()
    proc = subprocess.Popen(_cmd(out, fmt, procs, plan), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = None
    while proc.poll() is None:
        if first is None and _train_records(out):
            first = time.monotonic() - start
        time.sleep(0.01)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    took = time.monotonic() - start
    return (first if first is not None else 0.0), took


def campaign(kills: int, torchrun_kills: int, seed: int, work: Path, log=print, *, formats=("plain", "sharded"),
             plan: Plan = Plan()) -> list[Kill]:
    """Reference runs, then ``kills`` single-process and ``torchrun_kills`` 2-process kill + resume rows;
    every 4th single-process kill (the 2nd, 6th ...) inside a checkpoint write, the checkpoint format alternating."""
    refs: dict[tuple[str, int], tuple[Path, float, float]] = {}
    plans = [(formats[(i // 4 + i) % len(formats)], 1, "checkpoint write" if i % 4 == 1 else "random")
             for i in range(kills)]
    plans += [("sharded", 2, "checkpoint write" if i % 2 == 1 else "random") for i in range(torchrun_kills)]
    rows = []
    for n, (fmt, procs, moment) in enumerate(plans, 1):
        if (fmt, procs) not in refs:
            ref = work / f"ref-{fmt}-{procs}"
            first, took = _reference(ref, fmt, procs, plan)
            refs[fmt, procs] = (ref, first, took)
            log(f"reference ({fmt} checkpoints, {procs} process(es)): {took:.1f} s, first step logged at {first:.1f} s")
        ref, first, took = refs[fmt, procs]
        rng = random.Random(seed * 1000 + n)
        # a moment of the training, uniform over its steps (0: before the first step is logged)
        at = rng.uniform(0.0, plan.steps - 1)
        row = one_kill(n, ref, work, fmt=fmt, procs=procs, moment=moment, at=at, rng=rng, plan=plan)
        log(f"kill {n:2d}: {row.launcher}, {fmt}, {moment}, at {row.killed_at_s:.2f} s ({row.steps_logged} steps "
            f"logged{', in a checkpoint write' if row.in_write else ''}), resumed from step {row.resumed_from}: "
            f"{'identical' if row.identical else 'DIFFERENT'}{' - ' + row.note if row.note else ''}")
        rows.append(row)
    return rows


def markdown(rows: list[Kill], header: str) -> str:
    lines = [header, "", "| # | launcher | checkpoints | kill moment | killed at (s) | steps done | in a write | "
             "resumed from step | final weights |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.n} | {r.launcher} | {r.checkpoints} | {r.moment} | {r.killed_at_s:.2f} | {r.steps_logged} | "
                     f"{'yes' if r.in_write else 'no'} | {r.resumed_from} | "
                     f"{'bitwise identical' if r.identical else '**different**'}{' (' + r.note + ')' if r.note else ''} |")
    ok = sum(r.identical for r in rows)
    lines += ["", f"{ok} of {len(rows)} resumed runs bitwise identical to the uninterrupted run."]
    exits = sum("the exit failed" in r.note for r in rows)
    if exits:
        lines.append(f"{exits} of them finished and wrote their model, then a process failed at exit (see the notes).")
    return "\n".join(lines)


def exit_runs(runs: int, work: Path, log=print, *, steps: int = 6) -> dict[str, dict[str, int]]:
    """Short 2-process FSDP runs under torchrun, alternating the recipes' teardown (barrier, then destroy the
    process group) with none (as finetune / distill exited before): how many exited non-zero, and how many
    said "terminate called without an active exception" (the abort seen once at exit, docs/reliability.md#exit)."""
    counts = {v: {"runs": 0, "failed": 0, "terminate": 0} for v in ("teardown", "no teardown")}
    for n in range(runs):
        variant = "teardown" if n % 2 == 0 else "no teardown"
        out = work / f"exit-{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(TOY),
               str(out), "--model", "gpt", "--dropout", "0.1", "--steps", str(steps), "--save-every", "3",
               "--global-batch", "16", "--distributed", "fsdp", *([] if variant == "teardown" else ["--no-teardown"])]
        res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        said = "terminate called without an active exception" in res.stderr
        c = counts[variant]
        c["runs"] += 1
        c["failed"] += res.returncode != 0
        c["terminate"] += said
        log(f"exit run {n + 1:2d} ({variant}): rc {res.returncode}{', terminate called' if said else ''}")
        if res.returncode != 0 and not said:
            log(res.stderr[-1500:])
        shutil.rmtree(out, ignore_errors=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="single-process kills (default 20)")
    ap.add_argument("--torchrun-kills", type=int, default=3, help="kills of one rank of 2 under torchrun (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--exit-runs", type=int, default=0, metavar="N", help="instead: N short 2-process runs, "
                    "with and without the process-group teardown, counting failed exits")
    args = ap.parse_args(argv)
    import torch

    load = os.getloadavg()
    header = (f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, load average at start "
              f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(header, flush=True)
    t0 = time.monotonic()
    if args.exit_runs:
        with tempfile.TemporaryDirectory(prefix="lmforge-exits-") as work:
            counts = exit_runs(args.exit_runs, Path(work), log=lambda m: print(m, flush=True))
        load = os.getloadavg()
        print(f"\n{time.monotonic() - t0:.0f} s, load average at the end {load[0]:.2f}")
        for variant, c in counts.items():
            print(f"{variant}: {c['runs']} runs, {c['failed']} exited non-zero, {c['terminate']} said 'terminate called'")
        return 0 if not any(c["failed"] for c in counts.values()) else 1
    with tempfile.TemporaryDirectory(prefix="lmforge-faults-") as work:
        rows = campaign(args.kills, args.torchrun_kills, args.seed, Path(work), log=lambda m: print(m, flush=True))
    took = time.monotonic() - t0
    text = markdown(rows, header + f"; the campaign took {took:.0f} s")
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "seconds": took, "rows": [asdict(r) for r in rows]},
                                              indent=1) + "\n")
    return 0 if all(r.identical for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
