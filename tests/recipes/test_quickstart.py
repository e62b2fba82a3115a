"""`lmforge quickstart`: the --fast pipeline end to end (every stage ran, every output exists), and the
out-directory rules (refuse non-empty, --overwrite, resume after an interruption) on stand-in stages."""
from __future__ import annotations

import json
import statistics

import pytest

from lmforge.recipes import quickstart as qs
from lmforge.cli import main as cli_main
from lmforge.errors import LmforgeError


def test_fast_run_produces_every_output(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli_main(["quickstart", "--out", str(out), "--fast"]) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / ".quickstart/state.json").read_text())
    assert set(state["done"]) == {*qs.STAGES, "report"}
    for rel in ("data/corpus/train.txt", "tokenizers/wordpiece", "tokenizers/bpe", "shards/wordpiece/meta.json",
                "models/bert/config.json", "models/bert/model.safetensors", "models/bert/loss.png",
                "models/gpt/config.json", "models/gpt/loss.png", "finetune/cola-pretrained/seed-0/metrics.json",
                "finetune/cola-scratch/seed-0/confusion_matrix.png", "finetune/squad/metrics.json",
                "generation/sample.txt", "fewshot/fewshot.png", "fewshot/results.json", "cola_mcc.png",
                "report.md", "results.json"):
        assert (out / rel).exists(), rel
    results = json.loads((out / "results.json").read_text())
    cola = results["cola"]
    assert -1 <= cola["pretrained"]["mcc"] <= 1 and -1 <= cola["scratch"]["mcc"] <= 1
    # the headline gain is on the held-out test split (dev picked the epochs)
    assert cola["mcc_gain"] == pytest.approx(cola["pretrained"]["test"]["mcc"] - cola["scratch"]["test"]["mcc"], abs=1e-3)
    assert cola["dev_mcc_gain"] == pytest.approx(cola["pretrained"]["mcc"] - cola["scratch"]["mcc"], abs=1e-3)
    for name in ("pretrained", "scratch"):
        test_rows = (out / "data/cola/test.tsv").read_text().splitlines()
        by_source = cola[name]["test"]["by_source"]
        assert sum(v["n"] for v in by_source.values()) == len(test_rows)
        assert set(by_source) == {row.split("\t")[0] for row in test_rows}
        # every fine-tuning seed ran and was scored; the table's numbers are their means
        runs = cola[name]["seeds"]
        assert [r["seed"] for r in runs] == list(qs.SETTINGS["fast"].cola_seeds)
        for r in runs:
            assert (out / f"finetune/cola-{name}/seed-{r['seed']}/test/predictions.tsv").is_file()
        assert cola[name]["test"]["mcc"] == pytest.approx(statistics.mean(r["test"]["mcc"] for r in runs), abs=1e-4)
        assert cola[name]["test"]["mcc_std"] == pytest.approx(statistics.stdev(r["test"]["mcc"] for r in runs), abs=1e-4)
        assert cola[name]["mcc"] == pytest.approx(statistics.mean(r["mcc"] for r in runs), abs=1e-4)
    assert [row["k"] for row in results["fewshot"]["rows"]] == [0, 1, 4]
    for row in results["fewshot"]["rows"]:  # both prompt formats scored; the verdict share is a share
        assert 0 <= row["named"] <= 1 and 0 <= row["neutral"] <= row["neutral_verdict_share"] <= 1
    # the GPT learns from its own corpus with demonstrations; BERT's corpus stays the plain one
    gpt_corpus = (out / "data/gpt-corpus/train.txt").read_text()
    assert "Input: " in gpt_corpus and "Review: " in gpt_corpus
    assert "Input: " not in (out / "data/corpus/train.txt").read_text()
    assert results["data"]["gpt_corpus_demonstrations"] == sum(
        ("Input: " in line or "Review: " in line or " Q: " in line) for line in gpt_corpus.splitlines())
    assert results["bert"]["steps"] == qs.SETTINGS["fast"].bert_steps
    report = (out / "report.md").read_text()
    for image in ("models/bert/loss.png", "models/gpt/loss.png", "cola_mcc.png", "fewshot/fewshot.png",
                  "finetune/cola-pretrained/seed-0/confusion_matrix.png"):
        assert f"]({image})" in report
    assert "acceptability test MCC, pre-trained BERT" in printed and "k=4" in printed
    # a finished run is not silently redone
    assert cli_main(["quickstart", "--out", str(out), "--fast"]) == 2
    assert "already holds a finished quickstart" in capsys.readouterr().err


def test_accuracy_by_source_counts_each_corruption(tmp_path):
    cola = tmp_path / "test.tsv"
    cola.write_text("tl_ok\t1\t\tA fox sleeps.\ntl_agr\t0\t*\tA fox sleep.\ntl_agr\t0\t*\tThe foxes sleeps.\n"
                    "tl_ok\t1\t\tThe foxes sleep.\n")
    predictions = tmp_path / "predictions.tsv"
    predictions.write_text("index\tprediction\n0\t1\n1\t1\n2\t0\n3\t0\n")
    assert qs.accuracy_by_source(cola, predictions) == {"tl_agr": {"n": 2, "accuracy": 0.5},
                                                       "tl_ok": {"n": 2, "accuracy": 0.5}}
    predictions.write_text("index\tprediction\n0\t1\n")
    with pytest.raises(LmforgeError, match="1 predictions for the 4 rows"):
        qs.accuracy_by_source(cola, predictions)


def test_pretraining_speed_is_tokens_over_time_not_a_mean_of_rates(tmp_path):
    # 2 windows of 10 steps: 1,000 tokens/s and 100 tokens/s. With T tokens a step the run took
    # 10T/1000 + 10T/100 seconds for 20T tokens: 20 / 0.11 = 181.8 tokens/s (the mean of rates says 550)
    records = [{"split": "train", "step": 10, "loss": 5.0, "tokens_per_s": 1000.0},
               {"split": "train", "step": 20, "loss": 4.0, "tokens_per_s": 100.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = qs._pretrain_summary(tmp_path)
    assert summary["tokens_per_s"] == pytest.approx(181.8, abs=0.1)
    assert (summary["steps"], summary["first_loss"], summary["final_loss"]) == (20, 5.0, 4.0)


# ------------------------------------------------------------------ out-directory rules (stand-in stages)
class _Interrupt(BaseException):
    """Stands for Ctrl-C / a kill in the middle of a stage."""


@pytest.fixture
def stand_in(monkeypatch):
    calls: list[str] = []
    fail = {"second": 1}  # the second stage is interrupted once

    def first(run):
        calls.append("first")
        (run.path("data")).mkdir(parents=True, exist_ok=True)
        return {"ok": 1}

    def second(run):
        calls.append("second")
        run.path("models").mkdir(parents=True, exist_ok=True)
        (run.path("models") / "half-written").write_text("x")
        if fail["second"]:
            fail["second"] -= 1
            raise _Interrupt()
        (run.path("models") / "done").write_text("x")
        return {"ok": 2}

    monkeypatch.setattr(qs, "STAGES", {"first": ("first", first, ("data",)), "second": ("second", second, ("models",))})
    return calls


def test_interrupted_run_resumes_after_the_last_finished_stage(tmp_path, stand_in):
    out = tmp_path / "q"
    with pytest.raises(_Interrupt):
        qs.quickstart(out, fast=True, log=lambda m: None)
    assert json.loads((out / ".quickstart/state.json").read_text())["done"].keys() == {"first"}
    lines: list[str] = []
    qs.quickstart(out, fast=True, log=lines.append)
    assert stand_in == ["first", "second", "second"]  # the first stage was not redone
    assert any("done before, skipped" in line for line in lines)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["done", "half-written"]
    assert (out / "report.md").is_file()


def test_a_failing_stage_fails_loudly_and_is_not_marked_done(tmp_path, monkeypatch):
    def broken(run):
        print("something the stage printed")
        raise LmforgeError("the model is missing")

    monkeypatch.setattr(qs, "STAGES", {"broken": ("broken", broken, ())})
    lines: list[str] = []
    with pytest.raises(LmforgeError, match="stage broken .* failed: the model is missing"):
        qs.quickstart(tmp_path / "q", log=lines.append)
    assert any("something the stage printed" in line for line in lines)  # the log's tail is shown
    assert json.loads((tmp_path / "q/.quickstart/state.json").read_text())["done"] == {}


def test_a_run_interrupted_in_its_first_stage_can_be_continued(tmp_path, monkeypatch):
    calls = []

    def first(run):
        calls.append(1)
        run.path("data").mkdir(exist_ok=True)
        if len(calls) == 1:
            raise _Interrupt()
        return {}

    monkeypatch.setattr(qs, "STAGES", {"first": ("first", first, ("data",))})
    with pytest.raises(_Interrupt):
        qs.quickstart(tmp_path / "q", log=lambda m: None)
    qs.quickstart(tmp_path / "q", log=lambda m: None)  # not refused as "non-empty": it is our own run
    assert len(calls) == 2


def test_non_empty_out_is_refused_unless_overwrite(tmp_path, capsys, stand_in):
    out = tmp_path / "q"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert cli_main(["quickstart", "--out", str(out), "--fast"]) == 2
    assert "is not empty" in capsys.readouterr().err
    (out / "data").mkdir()  # an old quickstart output
    (out / "data" / "old").write_text("x")
    with pytest.raises(_Interrupt):  # the stand-in second stage interrupts once
        qs.quickstart(out, fast=True, overwrite=True, log=lambda m: None)
    assert (out / "mine.txt").read_text() == "keep me"  # --overwrite removes only quickstart's own outputs
    assert not (out / "data" / "old").exists()


def test_other_settings_are_not_resumed(tmp_path, stand_in):
    out = tmp_path / "q"
    with pytest.raises(_Interrupt):
        qs.quickstart(out, fast=True, log=lambda m: None)
    with pytest.raises(LmforgeError, match="other settings"):
        qs.quickstart(out, fast=False, log=lambda m: None)
    # a half-finished run of an older lmforge (its stages wrote other files) is not resumed either
    state = out / ".quickstart" / "state.json"
    state.write_text(state.read_text().replace(f'"version": {qs.STATE_VERSION}', '"version": 1'))
    with pytest.raises(LmforgeError, match="another lmforge version .* --overwrite"):
        qs.quickstart(out, fast=True, log=lambda m: None)


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(LmforgeError, match="is a file"):
        qs.quickstart(f, fast=True, log=lambda m: None)
