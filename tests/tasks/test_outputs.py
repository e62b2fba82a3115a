"""Fine-tuning outputs and CLI errors that need no trained model."""
from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.finetune import summarize_seeds, write_outputs, write_predictions
from lmforge.tasks import get_task


def test_glue_predictions_tsv_and_confusion_matrix(refdata, tmp_path):
    task = get_task("glue-cola")
    examples = task.read(refdata / "glue" / "CoLA", "dev")
    preds = [1] * len(examples)
    scores = task.metric(preds, examples)
    assert scores["mcc"] == 0.0  # a constant prediction has no correlation
    write_outputs(tmp_path, task, examples, preds, scores)
    lines = (tmp_path / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and lines[1] == "0\t1" and len(lines) == 151
    assert json.loads((tmp_path / "metrics.json").read_text()) == scores
    png = (tmp_path / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_squad_predictions_json_is_what_the_official_evaluator_reads(refdata, tmp_path):
    task = get_task("squad-v2")
    examples = task.read(refdata / "squad", "dev")
    preds = [{"text": ex["answers"][0] if ex["answers"] else "x", "null_odds": 1.0 if ex["impossible"] else -1.0}
             for ex in examples]
    path = write_predictions(tmp_path, task, examples, preds)
    data = json.loads(path.read_text())
    assert set(data) == {ex["id"] for ex in examples}
    assert all(data[ex["id"]] == "" for ex in examples if ex["impossible"])  # null wins above the threshold
    assert task.metric(preds, examples)["exact"] == 100.0


def test_seed_summary_is_mean_and_sample_std():
    runs = [{"mcc": 0.1, "accuracy": 0.7}, {"mcc": 0.3, "accuracy": 0.72}, {"mcc": 0.2, "accuracy": 0.69}]
    out = summarize_seeds(runs, [1, 2, 3])
    assert out["seeds"] == [1, 2, 3]
    assert out["mcc"] == pytest.approx(0.2) and out["mcc_std"] == pytest.approx(statistics.stdev([0.1, 0.3, 0.2]))
    assert out["accuracy_std"] == pytest.approx(np.std([0.7, 0.72, 0.69], ddof=1))


def test_cli_unknown_task_and_preset_without_tokenizer(refdata, tmp_path, capsys):
    code = main(["finetune", "--model", "bert-tiny", "--task", "glue-cloa", "--data", str(refdata / "glue" / "CoLA"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "unknown task 'glue-cloa'" in capsys.readouterr().err
    code = main(["finetune", "--model", "bert-tiny", "--task", "glue-cola", "--data", str(refdata / "glue" / "CoLA"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "pass --tokenizer DIR" in capsys.readouterr().err
