"""What a run reports: a tqdm bar, ``metrics.jsonl``, optional TensorBoard and a loss-curve PNG.

``metrics.jsonl`` holds one JSON object per line: training records (``"split": "train"``, at least
``step, loss, lr, tokens_per_s``) every ``log_every`` steps and validation records (``"split": "val"``)
after each evaluation. On resume, records past the checkpoint's step (written by the killed run)
are dropped first, so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


class RunLogger:
    """Rank-0 reporting; on other ranks every method is a no-op (``enabled=False``)."""

    def __init__(self, out_dir: Path, *, enabled: bool = True, total_steps: int = 0, start_step: int = 0,
                 progress: bool = True, tensorboard: bool = False, desc: str = "train") -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
        self.bar = None
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        self.fh = open(self.path, "a", encoding="utf-8")
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True,
                            unit="step", smoothing=0.1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                self.note("tensorboard is not installed (pip install tensorboard); logging to metrics.jsonl only")
        self.t0 = time.perf_counter()

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (and mirror numbers to TensorBoard)."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{split}/{k}", v, record.get("step", 0))

    def advance(self, n: int, **postfix: Any) -> None:
        """Move the bar ``n`` steps; ``postfix`` values are shown beside it."""
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def note(self, message: str) -> None:
        """A line for the user that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(out_dir: Path, *, title: str = "loss") -> Path | None:
    """``loss.png``: training loss by step, validation loss as points. None when there is nothing to plot."""
    out_dir = Path(out_dir)
    if not (out_dir / METRICS_FILE).is_file():
        return None
    records = read_metrics(out_dir / METRICS_FILE)
    def points(split: str) -> list[tuple[float, float]]:
        return [(r["step"], r["loss"]) for r in records if r.get("split", "train") == split
                and isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]

    train, val = points("train"), points("val")
    if not train and not val:
        return None
    from lmforge.train.plot import BLUE, ORANGE, line_chart

    return line_chart(out_dir / PLOT_FILE, [("train", train, BLUE, False), ("validation", val, ORANGE, True)],
                      title=title, xlabel="step", ylabel="loss")


__all__ = ["METRICS_FILE", "PLOT_FILE", "RunLogger", "plot_loss", "read_metrics"]
