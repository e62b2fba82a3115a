"""--tensorboard mirrors every numeric metrics.jsonl field into TensorBoard event files, read back with
TensorBoard's own reader (the reference; skipped when tensorboard is not installed)."""
from __future__ import annotations

import pytest

from lmforge.train.logging import RunLogger, read_metrics

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install tensorboard)")


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path):
    log = RunLogger(tmp_path, progress=False, tensorboard=True, total_steps=3)
    assert log.tb is not None
    for step, loss in [(1, 2.5), (2, 2.0), (3, 1.25)]:
        log.log({"split": "train", "step": step, "loss": loss, "lr": 1e-3 * step, "tokens_per_s": 100.0 + step})
    log.log({"split": "val", "step": 3, "loss": 1.5, "perplexity": 4.4817})
    log.close()

    runs = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(runs) == 1
    acc = event_accumulator.EventAccumulator(str(runs[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/loss", "val/perplexity"} <= tags
    assert not any(t.endswith("/step") or t.endswith("/epoch") for t in tags)
    for record in read_metrics(tmp_path / "metrics.jsonl"):
        for key, value in record.items():
            if key in ("split", "step"):
                continue
            events = {e.step: e.value for e in acc.Scalars(f"{record['split']}/{key}")}
            assert events[record["step"]] == pytest.approx(value, rel=1e-6), (record["split"], key)
