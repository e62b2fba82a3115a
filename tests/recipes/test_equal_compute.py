"""The MLM vs RTD equal-compute experiment: its FLOP counter counts CPU attention as torch counts GPU
attention, and the --fast flavour runs every stage end to end (budgets matched in FLOPs, a table, a PNG,
a second call that continues instead of redoing)."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from lmforge.recipes.equal_compute import _flop_counter, equal_compute


def test_cpu_attention_is_counted_with_torchs_sdpa_formula() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    b, h, s, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    with _flop_counter() as ours:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    # forward QK^T and PV: 2 x 2bhs^2d; backward (scores recomputed, then 4 products): 5 x 2bhs^2d
    assert plain.get_total_flops() == 0 and ours.get_total_flops() == 7 * 2 * b * h * s * s * d


def test_fast_run_end_to_end(tmp_path) -> None:
    lines: list[str] = []
    summary = equal_compute(tmp_path, fast=True, log=lines.append)
    rows = summary["rows"]
    assert [(r["objective"], r["budget"]) for r in rows] == [("mlm", 1), ("rtd", 1), ("mlm", 2), ("rtd", 2),
                                                             ("none (from scratch)", 0)]
    per_step = summary["flops_per_step"]
    assert per_step["rtd"] > per_step["mlm"] > 0  # the generator costs compute too
    for mlm, rtd in zip(rows[0:4:2], rows[1:4:2]):  # each budget: the same FLOPs, up to one rtd step
        assert mlm["flops"] == mlm["steps"] * per_step["mlm"] and mlm["steps"] in summary["settings"]["budgets"]
        assert abs(rtd["flops"] - mlm["flops"]) <= per_step["rtd"] / 2 + 1
        assert rtd["val"]["disc_accuracy"] > 0 and "mlm_accuracy" in mlm["val"]
    for r in rows:
        assert len(r["seeds"]) == 2 and -1 <= r["test_mcc"] <= 1
    # the executed step skips most of the MLM model's (and the generator's) last layer: fewer FLOPs
    executed = summary["executed_flops_per_step"]
    assert executed["mlm"] < per_step["mlm"] and executed["rtd"] < per_step["rtd"]
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| pre-training | budget | FLOPs (full) | FLOPs executed |") and table.count("\n| rtd |") == 2
    assert (tmp_path / "equal_compute.png").stat().st_size > 5000
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["objective"] == "mlm"
    assert not list((tmp_path / "finetune").rglob("model.safetensors"))  # scores kept, fine-tuned weights not
    # a second call finds every unit done and only rewrites the report
    again: list[str] = []
    assert equal_compute(tmp_path, fast=True, log=again.append)["rows"] == rows
    assert not any("done in" in line for line in again)
