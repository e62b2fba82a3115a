"""Pre-training a Reformer (reversible layers, local / lsh attention, axial positions, chunked feed-forward)
through `lmforge pretrain` on the toy shards: clm and mlm run, checkpoint, reload, and generate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.cli import main

REFORMER_YAML = """preset: reformer-crime
num_layers: 2
hidden_size: 32
num_heads: 2
attention_head_size: 8
intermediate_size: 64
max_positions: 64
axial_pos_shape: [8, 8]
axial_pos_embds_dim: [8, 24]
lsh_chunk_length: 8
local_chunk_length: 8
num_buckets: 4
num_hashes: 2
ff_chunk_size: 8
"""


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_reformer_pretrains_through_the_cli(toy_shards, tmp_path, objective, capsys):
    from lmforge import Model

    config = tmp_path / "reformer.yaml"
    config.write_text(REFORMER_YAML + ("causal: false\n" if objective == "mlm" else ""))
    out = tmp_path / "run"
    data = toy_shards["bpe" if objective == "clm" else "wordpiece"]
    args = ["pretrain", "--model", str(config), "--objective", objective, "--data", str(data), "--out", str(out),
            "--batch-size", "4", "--seq-len", "32", "--log-every", "1", "--val-batches", "1", "--no-progress",
            "--max-steps", "6", "--lr", "3e-3"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    m = Model.from_pretrained(out)
    assert m.config.reversible and m.config.attention_pattern == ["local", "lsh"]
    if objective == "clm":
        assert m.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4).shape == (1, 7)
