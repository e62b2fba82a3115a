"""benchmarks/finetuning.py's HF side: it must train on the token ids lmforge's side makes from the same rows.

Until 2026-12-05 evening it built its tokenizer as ``BertTokenizerFast(vocab_file=...)``, which transformers 5
ignores (the argument is ``vocab`` there), so HF's Trainer saw every word as [UNK] (docs/finetuning.md)."""
from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest


def _sst2(refdata: Path, tmp_path: Path, rows: int) -> Path:
    data = tmp_path / "sst2"
    data.mkdir()
    lines = (refdata / "glue" / "SST-2" / "train_20k.tsv").read_text(encoding="utf-8").splitlines()
    (data / "train.tsv").write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return data


def test_hf_side_tokenizes_as_lmforge(refdata, tmp_path, benchmark_module) -> None:
    bench = benchmark_module("finetuning")
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", model / "vocab.txt")
    from lmforge.tasks import get_task

    task = get_task("glue-sst2")
    data = _sst2(refdata, tmp_path, 300)
    tok = bench.hf_tokenizer(str(model))
    assert len(tok) == 30522
    rows = task.read(data, "train")
    ids = tok([r["text"] for r in rows], truncation=True, max_length=128)["input_ids"]
    job = {"data": str(data), "model": str(model)}
    bench.same_tokens(job, task, "sst2", 128, ids)  # passes: the same ids
    assert sum(i == tok.unk_token_id for r in ids for i in r) < 0.01 * sum(map(len, ids))

    # what the benchmark did before: every word [UNK]; the check stops such a run
    from transformers import BertTokenizerFast

    broken = BertTokenizerFast(vocab_file=str(model / "vocab.txt"), do_lower_case=True)
    bad = broken([r["text"] for r in rows], truncation=True, max_length=128)["input_ids"]
    if bad == ids:
        pytest.skip("this transformers reads vocab_file= again")
    with pytest.raises(SystemExit, match="other token ids"):
        bench.same_tokens(job, task, "sst2", 128, bad)


def test_metric_gap_is_welchs_difference(benchmark_module) -> None:
    stats = pytest.importorskip("scipy.stats")
    bench = benchmark_module("finetuning")
    ours, ref = [0.85, 0.844, 0.852], [0.83, 0.851, 0.842]
    text = bench.metric_gap(ours, [{"metric": m} for m in ref])
    gap, band = text.split(" (+- ")
    welch = stats.ttest_ind(ours, ref, equal_var=False)
    diff = statistics.mean(ours) - statistics.mean(ref)
    assert float(gap) == pytest.approx(diff, abs=1e-4)
    assert float(band.rstrip(")")) / 2 == pytest.approx(diff / welch.statistic, abs=1e-4)  # t = gap / SE
    assert bench.metric_gap(ours, None) == "-" and bench.metric_gap([0.8], [{"metric": 0.7}] * 3) == "-"
