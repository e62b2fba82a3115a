"""Fine-tuning outputs and CLI errors that need no trained model."""
from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.recipes.finetune import summarize_seeds, write_outputs, write_predictions
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


# the metrics.json keys the issue names, per task (the first one picks the best epoch)
GLUE_KEYS = {"glue-cola": ["mcc", "accuracy"], "glue-sst2": ["accuracy"], "glue-mrpc": ["f1", "accuracy"],
             "glue-qqp": ["f1", "accuracy"], "glue-stsb": ["pearson", "spearman"], "glue-mnli": ["accuracy"],
             "glue-qnli": ["accuracy"], "glue-rte": ["accuracy"], "glue-wnli": ["accuracy"]}


@pytest.mark.parametrize("name", list(GLUE_KEYS))
def test_glue_metric_keys_and_values_equal_the_references(name):
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    task = get_task(name)
    rng = np.random.default_rng(len(name))
    n = 60
    if task.labels is None:  # STS-B: scores 0..5, predictions are noisy scores
        gold = np.round(rng.random(n) * 5, 1)
        preds = list(gold + rng.normal(0, 1.5, n))
    else:
        gold = rng.integers(0, len(task.labels), n)
        preds = [int(g) if rng.random() < 0.7 else int(rng.integers(0, len(task.labels))) for g in gold]
    examples = [{"id": str(i), "label": float(g) if task.labels is None else int(g)} for i, g in enumerate(gold)]
    scores = task.metric(preds, examples)
    assert list(scores) == GLUE_KEYS[name] and task.main_metric == GLUE_KEYS[name][0]
    reference = {"mcc": lambda: sk.matthews_corrcoef(gold, preds), "accuracy": lambda: sk.accuracy_score(gold, preds),
                 "f1": lambda: sk.f1_score(gold, preds), "pearson": lambda: stats.pearsonr(preds, gold)[0],
                 "spearman": lambda: stats.spearmanr(preds, gold)[0]}
    for key, value in scores.items():
        assert value == pytest.approx(reference[key](), abs=1e-9), key


def test_squad_swag_tagging_text_metric_keys():
    squad_ex = [{"id": "a", "answers": ["France"]}, {"id": "b", "answers": []}]
    preds = [{"text": "France", "null_odds": -1.0}, {"text": "Rollo", "null_odds": 2.0}]
    assert list(get_task("squad").metric(preds[:1], squad_ex[:1])) == ["exact", "f1", "total"]
    v2 = get_task("squad-v2").metric(preds, squad_ex)
    assert set(v2) == {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                       "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"}
    assert v2["exact"] == 100.0  # 'b' is answered "" at threshold 0 (null_odds 2 > 0)
    assert get_task("swag").metric([1, 2], [{"label": 1}, {"label": 0}]) == {"accuracy": 0.5}
    assert get_task("pos").metric([[0, 1]], [{"tags": [0, 2]}]) == {"accuracy": 0.5}
    ner = get_task("ner", labels=["O", "B-PER", "I-PER"])
    assert list(ner.metric([[1, 2, 0]], [{"tags": [1, 2, 0]}])) == ["precision", "recall", "f1", "accuracy"]
    text = get_task("text", labels=["neg", "pos"])
    assert list(text.metric([0, 1], [{"label": 0}, {"label": 0}])) == ["accuracy", "f1_macro"]
