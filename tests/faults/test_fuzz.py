"""Malformed inputs, fuzzed: random bytes as a corpus, truncated / wrong-dtype shards, a meta.json or a
config.json with wrong types, a safetensors header lying about sizes. Each one is one LmforgeError through
the CLI (exit status 2, `lmforge CMD: error: ...`), never a traceback, and never a hang (an alarm stops a
case that runs past its bound)."""
from __future__ import annotations

import json
import random
import shutil
import signal
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main

BOUND_S = 60  # a hang guard, not a timing: every case takes about a second


@contextmanager
def _bounded(seconds: int):
    def alarm(signum, frame):
        raise AssertionError(f"hung: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _fails_cleanly(argv: list[str], capsys) -> str:
    with _bounded(BOUND_S):
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err[-2000:])
    assert f"lmforge {argv[0]}: error: " in err and "Traceback" not in err, err[-2000:]
    return err


def _pretrain(data: Path, model: Path, out: Path) -> list[str]:
    return ["pretrain", "--model", str(model), "--data", str(data), "--out", str(out), "--objective", "mlm",
            "--max-steps", "1", "--batch-size", "2", "--seq-len", "16", "--val-batches", "0", "--no-progress",
            "--device", "cpu"]


def test_the_valid_inputs_train(base, tmp_path, capsys):
    """The base the cases damage works, so each failure below is the damage's."""
    with _bounded(BOUND_S):
        assert main(_pretrain(base["shards"], base["model"], tmp_path / "ok")) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_as_a_corpus(base, tmp_path, capsys, seed):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(random.Random(seed).randbytes(20_000))
    err = _fails_cleanly(["prepare", "--tokenizer", str(base["tok"]), "--out", str(tmp_path / "s"), str(junk)], capsys)
    assert "junk.txt" in err


def _damaged_shards(base, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(base["shards"], copy)
    damage(copy)
    return copy


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _first_shard(d: Path) -> Path:
    meta = json.loads((d / "meta.json").read_text())
    return d / "train" / meta["splits"]["train"]["shards"][0]


def _retype_shard(d: Path) -> None:  # the ids written as int64 where meta.json says uint16
    shard = _first_shard(d)
    ids = np.fromfile(shard, dtype=json.loads((d / "meta.json").read_text())["dtype"])
    ids.astype(np.int64).tofile(shard)


def _meta(change):
    def damage(d: Path) -> None:
        meta = json.loads((d / "meta.json").read_text())
        change(meta)
        (d / "meta.json").write_text(json.dumps(meta))
    return damage


SHARD_DAMAGE = {
    "truncated shard": lambda d: _truncate(_first_shard(d), 0.5),
    "empty shard": lambda d: _truncate(_first_shard(d), 0.0),
    "wrong-dtype shard": _retype_shard,
    "truncated docs.bin": lambda d: _truncate(d / "train" / "docs.bin", 0.3),
    "missing shard": lambda d: _first_shard(d).unlink(),
    "meta dtype float64": _meta(lambda m: m.update(dtype="float64")),
    "meta dtype nonsense": _meta(lambda m: m.update(dtype="int77")),
    "meta tokens as a string": _meta(lambda m: m["splits"]["train"].update(tokens="many")),
    "meta splits a list": _meta(lambda m: m.update(splits=[1, 2])),
    "meta random bytes": lambda d: (d / "meta.json").write_bytes(random.Random(3).randbytes(300)),
    "meta truncated": lambda d: _truncate(d / "meta.json", 0.5),
}


@pytest.mark.parametrize("case", list(SHARD_DAMAGE))
def test_damaged_shards(base, tmp_path, capsys, case):
    data = _damaged_shards(base, tmp_path, SHARD_DAMAGE[case])
    _fails_cleanly(_pretrain(data, base["model"], tmp_path / "out"), capsys)


def _damaged_model(base, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(base["model"], copy)
    damage(copy)
    return copy


def _config(change):
    def damage(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        change(config)
        (d / "config.json").write_text(json.dumps(config))
    return damage


def _lying_header(size_factor: int):
    """Rewrite model.safetensors' header so one tensor claims more bytes than the file holds."""
    def damage(d: Path) -> None:
        raw = (d / "model.safetensors").read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        start, stop = header[name]["data_offsets"]
        header[name]["data_offsets"] = [start, start + (stop - start) * size_factor]
        header[name]["shape"] = [int(x) * size_factor if i == 0 else x for i, x in enumerate(header[name]["shape"])]
        text = json.dumps(header).encode()
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return damage


def _huge_header_length(d: Path) -> None:
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 2 ** 60) + raw[8:])


MODEL_DAMAGE = {
    "config hidden_size a string": _config(lambda c: c.update(hidden_size="big")),
    "config num_layers negative": _config(lambda c: c.update(num_layers=-2)),
    "config num_heads a float": _config(lambda c: c.update(num_heads=2.5)),
    "config a list": lambda d: (d / "config.json").write_text("[1, 2, 3]"),
    "config random bytes": lambda d: (d / "config.json").write_bytes(random.Random(4).randbytes(200)),
    "config vocab_size null": _config(lambda c: c.update(vocab_size=None)),
    "safetensors header lies about a size": _lying_header(1000),
    "safetensors header length past the file": _huge_header_length,
    "safetensors truncated": lambda d: _truncate(d / "model.safetensors", 0.6),
    "safetensors random bytes": lambda d: (d / "model.safetensors").write_bytes(random.Random(5).randbytes(5000)),
}


@pytest.mark.parametrize("case", list(MODEL_DAMAGE))
def test_damaged_model_dir(base, tmp_path, capsys, case):
    model = _damaged_model(base, tmp_path, MODEL_DAMAGE[case])
    _fails_cleanly(_pretrain(base["shards"], model, tmp_path / "out"), capsys)
