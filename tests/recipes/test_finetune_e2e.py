"""End to end on tiny models: `lmforge finetune / evaluate / predict` write every output and learn.

The models are tiny (hidden 32, 2 layers; fixtures ``tiny_encoder`` / ``tiny_decoder`` in conftest.py) and
use vocabularies trained on the samples, so every run takes seconds on 2 CPU cores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli import main



def test_cola_finetune_writes_every_output_and_learns_the_labels(refdata, tiny_encoder, tmp_path, capsys):
    from lmforge import Model

    cola = refdata / "glue" / "CoLA"
    out = tmp_path / "cola"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "glue-cola", "--data", str(cola),
                 "--out", str(out), "--epochs", "8", "--lr", "5e-3", "--head-lr", "5e-3", "--batch-size", "32",
                 "--max-length", "48", "--eval-split", "train", "--seed", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the MLM checkpoint's body is loaded and a fresh classifier added, said in one line
    assert "has a 'mlm' head" in captured.err and "fresh 'seq-cls' head" in captured.err
    for name in ("config.json", "model.safetensors", "tokenizer.json", "task.json", "metrics.json",
                 "predictions.tsv", "confusion_matrix.png", "metrics.jsonl"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "metrics.json").read_text())
    assert set(scores) == {"mcc", "accuracy"}
    # a model that has seen the labels scores well above chance (MCC 0) on them
    assert scores["mcc"] > 0.3, scores
    model = Model.from_pretrained(out)
    assert model.config.head == "seq-cls" and model.config.num_labels == 2

    # evaluate reproduces the saved metrics from the saved model; predict writes the GLUE layout
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out), "--data", str(cola), "--split", "train", "--out", str(ev)]) == 0
    again = json.loads((ev / "metrics.json").read_text())
    assert again["mcc"] == pytest.approx(scores["mcc"], abs=1e-9)
    assert main(["evaluate", "--model", str(out), "--data", str(cola), "--split", "dev"]) == 0
    pr = tmp_path / "pred"
    assert main(["predict", "--model", str(out), "--data", str(cola / "dev_sample.tsv"), "--out", str(pr)]) == 0
    lines = (pr / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 151 and {l.split("\t")[1] for l in lines[1:]} <= {"0", "1"}


def test_seeds_report_mean_and_std(refdata, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "seeds"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "glue-sst2", "--data",
                 str(refdata / "glue" / "SST-2"), "--train-split", "dev", "--eval-split", "dev", "--out", str(out),
                 "--epochs", "1", "--lr", "1e-3", "--max-length", "32", "--seeds", "1", "2"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    per_seed = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["accuracy"] for s in (1, 2)]
    assert summary["seeds"] == [1, 2]
    assert summary["accuracy"] == pytest.approx(sum(per_seed) / 2)
    assert summary["accuracy_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)


def test_squad_v2_finetune_tunes_the_null_threshold(refdata, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "squad"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "squad-v2", "--data", str(refdata / "squad"),
                 "--train-split", "dev", "--eval-split", "dev", "--out", str(out), "--epochs", "1",
                 "--max-length", "96", "--doc-stride", "32", "--batch-size", "16"])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((out / "metrics.json").read_text())
    for key in ("exact", "f1", "HasAns_exact", "NoAns_exact", "best_f1", "best_f1_thresh"):
        assert key in scores
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 14
    threshold = json.loads((out / "task.json").read_text())["null_threshold"]
    odds = json.loads((out / "null_odds.json").read_text())
    if scores["best_f1"] > 100 * scores["NoAns_total"] / scores["total"]:
        assert threshold == scores["best_f1_thresh"]
    else:  # best to answer nothing: the threshold sits below every null score
        assert threshold < min(odds.values())
    # predict answers with the tuned threshold: "" exactly where the null score beats it
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--model", str(out), "--data", str(refdata / "squad"), "--split", "dev",
                 "--out", str(pred_dir)]) == 0, capsys.readouterr().err
    answers = json.loads((pred_dir / "predictions.json").read_text())
    assert set(answers) == set(preds)
    for qid, text in answers.items():
        if odds[qid] > threshold:
            assert text == "", qid
        elif odds[qid] <= 0:  # below both thresholds: the same span finetune wrote at threshold 0
            assert text == preds[qid] != "", qid


def test_pos_and_swag_heads_run(refdata, tiny_encoder, tmp_path, capsys):
    ud = tmp_path / "ud"
    ud.mkdir()
    # 60 sentences of the real dev file as a small train split
    text = (refdata / "ud_english_ewt" / "en_ewt-ud-dev.conllu").read_text().split("\n\n")[:60]
    (ud / "train.conllu").write_text("\n\n".join(text) + "\n\n")
    out = tmp_path / "pos"
    assert main(["finetune", "--model", str(tiny_encoder), "--task", "pos", "--data", str(ud), "--eval-split",
                 "train", "--out", str(out), "--epochs", "2", "--lr", "3e-3", "--max-length", "64"]) == 0, \
        capsys.readouterr().err
    assert set(json.loads((out / "metrics.json").read_text())) == {"accuracy"}
    out = tmp_path / "swag"
    assert main(["finetune", "--model", str(tiny_encoder), "--task", "swag", "--data", str(refdata / "swag"),
                 "--train-split", "val", "--out", str(out), "--epochs", "1", "--max-length", "48"]) == 0, \
        capsys.readouterr().err
    assert (out / "predictions.tsv").read_text().count("\n") == 12


def test_gpt1_decoder_finetune_adds_tokens_and_lm_loss(refdata, tiny_decoder, tmp_path, capsys):
    from lmforge import Model, Tokenizer

    out = tmp_path / "rte"
    code = main(["finetune", "--model", str(tiny_decoder), "--task", "glue-rte", "--data", str(refdata / "glue" / "RTE"),
                 "--train-split", "val", "--eval-split", "val", "--out", str(out), "--epochs", "1", "--lr", "1e-3",
                 "--max-length", "64", "--batch-size", "32"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "fresh 'extract' head" in err
    tok = Tokenizer.from_pretrained(out)
    model = Model.from_pretrained(out)
    assert all(t in tok.get_vocab() for t in ("<|start|>", "<|delim|>", "<|extract|>"))
    assert model.config.vocab_size >= len(tok) and model.config.head == "extract"
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("lm_loss" in r for r in records if r.get("split") == "train")  # the auxiliary LM loss ran
    # similarity (STS-B layout): both orders summed into one regression output
    sts = tmp_path / "stsb-data"
    sts.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [f"{i}\tg\tf\ty\t{i}\ts\ts\tA man plays {i}.\tA man is playing {i}.\t{i % 5}.0" for i in range(40)]
    (sts / "train.tsv").write_text("\n".join([header, *rows]) + "\n")
    (sts / "dev.tsv").write_text("\n".join([header, *rows[:10]]) + "\n")
    out = tmp_path / "stsb"
    assert main(["finetune", "--model", str(tiny_decoder), "--task", "glue-stsb", "--data", str(sts), "--out",
                 str(out), "--epochs", "1", "--max-length", "32"]) == 0, capsys.readouterr().err
    assert {"pearson", "spearman"} <= set(json.loads((out / "metrics.json").read_text()))
    # multiple choice: one sequence per ending, one score each, softmax over the 4
    out = tmp_path / "swag"
    assert main(["finetune", "--model", str(tiny_decoder), "--task", "swag", "--data", str(refdata / "swag"),
                 "--train-split", "val", "--out", str(out), "--epochs", "1", "--max-length", "48"]) == 0, \
        capsys.readouterr().err
    assert Model.from_pretrained(out).config.extract_combine == "choice"
    assert set(json.loads((out / "metrics.json").read_text())) == {"accuracy"}


def test_mnli_matched_and_mismatched_from_scratch_with_truncation_warning(tiny_encoder, tmp_path, capsys):
    data = tmp_path / "mnli"
    data.mkdir()
    header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
              "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
    labels = ["contradiction", "entailment", "neutral"]
    rows = [f"{i}\tp\tq\tg\t-\t-\t-\t-\tThe students lower their eyes nervously number {i} again and again.\t"
            f"They look {i}.\t{labels[i % 3]}\t{labels[i % 3]}" for i in range(24)]
    for name, part in (("train", rows), ("dev_matched", rows[:9]), ("dev_mismatched", rows[9:18])):
        (data / f"{name}.tsv").write_text("\n".join([header, *part]) + "\n")
    out = tmp_path / "out"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "glue-mnli", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--max-length", "12", "--from-scratch"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "with fresh weights" in err
    assert "24 of 24 train inputs were longer than --max-length 12 tokens and were truncated" in err
    scores = json.loads((out / "metrics.json").read_text())
    assert set(scores) == {"accuracy", "accuracy_mm"}
    assert (out / "predictions.tsv").read_text().splitlines()[1].split("\t")[1] in labels


def test_finetune_maps_optimisation_flags_onto_the_trainer(tmp_path):
    from lmforge.recipes.finetune import FinetuneConfig, train_config
    from lmforge.tasks import get_task

    cfg = FinetuneConfig(model="m", task="glue-cola", data="d", out="o", lr=2e-5, head_lr=1e-3, layer_lr_decay=0.8,
                         warmup=0.06, weight_decay=0.1, epochs=3, patience=2, seed=7)
    tc = train_config(cfg, get_task("glue-cola"), batch_size=16, max_length=128, steps_per_epoch=10)
    assert (tc.lr, tc.head_lr, tc.layer_lr_decay, tc.warmup_ratio, tc.weight_decay) == (2e-5, 1e-3, 0.8, 0.06, 0.1)
    assert (tc.epochs, tc.patience, tc.seed, tc.best_metric, tc.best_mode) == (3, 2, 7, "mcc", "max")
    assert tc.eval_every_epoch and tc.load_best_at_end


def test_your_own_csv_data_round_trips_through_task_json(tiny_encoder, tmp_path, capsys):
    data = tmp_path / "reviews"
    data.mkdir()
    good = ["great fun", "loved it", "a joy", "wonderful story", "really great"]
    bad = ["awful", "boring mess", "hated it", "a bore", "really bad"]
    rows = [f'"{t}, truly",pos' for t in good] + [f'"{t}, truly",neg' for t in bad]
    (data / "train.csv").write_text("review,stars\n" + "\n".join(rows * 3) + "\n")
    (data / "dev.jsonl").write_text("\n".join(json.dumps({"review": t, "stars": "pos"}) for t in good) + "\n")
    out = tmp_path / "out"
    assert main(["finetune", "--model", str(tiny_encoder), "--task", "text", "--data", str(data), "--out", str(out),
                 "--text-column", "review", "--label-column", "stars", "--epochs", "1", "--max-length", "16"]) == 0, \
        capsys.readouterr().err
    state = json.loads((out / "task.json").read_text())
    assert state["labels"] == ["neg", "pos"] and state["text_column"] == "review"
    # evaluate needs neither --task nor the column flags: task.json has them
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--split", "dev"]) == 0
    assert "accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------- NER (CoNLL-2003 columns)
PEOPLE = [("John", "Smith"), ("Mary", "Jones"), ("Peter", "Blackburn"), ("Anna", "Berg")]
PLACES = ["Paris", "Berlin", "London", "Rome"]
ORGS = ["Reuters", "Siemens"]


def _conll_sentences(scheme: str, n: int, offset: int) -> list[list[tuple[str, str]]]:
    """Sentences of (word, tag): a two-word person, a place, sometimes a company and two adjacent
    places (IOB1 marks the second with B- only because it touches another LOC)."""
    def tag(kind: str, first: bool, after_same: bool) -> str:
        if scheme == "iob2":
            return ("B-" if first else "I-") + kind
        return ("B-" if first and after_same else "I-") + kind  # IOB1: B- only between same-type neighbours

    out = []
    for k in range(offset, offset + n):
        first, last = PEOPLE[k % len(PEOPLE)]
        place, other = PLACES[k % len(PLACES)], PLACES[(k + 1) % len(PLACES)]
        s = [(first, tag("PER", True, False)), (last, tag("PER", False, False)), ("visited", "O"),
             (place, tag("LOC", True, False))]
        if k % 3 == 0:
            s += [(other, tag("LOC", True, True))]  # a second place right after the first
        if k % 2 == 0:
            s += [("with", "O"), (ORGS[k % len(ORGS)], tag("ORG", True, False))]
        out.append(s + [(".", "O")])
    return out


def _write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    # the CoNLL-2003 layout: word, POS, chunk, NER tag; -DOCSTART- and blank lines between sentences
    lines = ["-DOCSTART- -X- -X- O", ""]
    for s in sentences:
        lines += [f"{w} NNP I-NP {t}" for w, t in s] + [""]
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("scheme", ["iob1", "iob2"])
def test_ner_conll2003_finetune_scores_equal_seqeval(scheme, tiny_encoder, tmp_path, capsys):
    seqeval = pytest.importorskip("seqeval.metrics")
    data = tmp_path / "conll"
    data.mkdir()
    dev = _conll_sentences(scheme, 12, offset=100)
    _write_conll(data / "train.txt", _conll_sentences(scheme, 48, offset=0))
    _write_conll(data / "dev.txt", dev)
    out = tmp_path / "ner"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "ner", "--data", str(data), "--out", str(out),
                 "--epochs", "3", "--lr", "5e-3", "--batch-size", "16", "--max-length", "32", "--seed", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "fresh 'token-cls' head" in err
    scores = json.loads((out / "metrics.json").read_text())
    assert set(scores) == {"f1", "precision", "recall", "accuracy"}
    # predictions.tsv: one line of word tags per sentence; entity scores equal seqeval's on them
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + len(dev)
    predicted = [line.split("\t")[1].split(" ") for line in lines[1:]]
    gold = [[t for _, t in s] for s in dev]
    assert [len(p) for p in predicted] == [len(g) for g in gold]
    assert scores["f1"] == pytest.approx(seqeval.f1_score(gold, predicted), abs=1e-9)
    assert scores["precision"] == pytest.approx(seqeval.precision_score(gold, predicted), abs=1e-9)
    assert scores["recall"] == pytest.approx(seqeval.recall_score(gold, predicted), abs=1e-9)
    assert scores["accuracy"] == pytest.approx(seqeval.accuracy_score(gold, predicted), abs=1e-9)
    # 3 epochs leave some mistakes (so the comparison means something) yet score far above chance
    assert scores["f1"] > 0.5, scores
    state = json.loads((out / "task.json").read_text())
    assert set(state["labels"]) == {t for s in dev for _, t in s}  # the tag set came from the data
    # evaluate rebuilds the task (tag set included) from task.json and reproduces the scores
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--split", "dev"]) == 0
    assert f"f1 {scores['f1']:.4f}" in capsys.readouterr().out


def test_default_lr_scales_with_the_body_width():
    from lmforge.recipes.finetune import default_lr

    # BERT's 2e-5 at base width, (768 / H) ** 1.5 narrower, within [1e-5, 3e-4]
    assert [default_lr(h) for h in (32, 128, 256, 512, 768, 1024, 4096)] == [3e-4, 2.9e-4, 1e-4, 3.7e-5, 2e-5,
                                                                                1.3e-5, 1e-5]


def test_finetune_without_lr_uses_the_width_default(refdata, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "auto-lr"
    code = main(["finetune", "--model", str(tiny_encoder), "--task", "glue-sst2", "--data",
                 str(refdata / "glue" / "SST-2"), "--train-split", "dev", "--eval-split", "dev", "--out", str(out),
                 "--max-steps", "4", "--warmup", "1", "--max-length", "32"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "learning rate 0.0003 (the default for a 32-wide body" in err
    lrs = [json.loads(line).get("lr") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(x for x in lrs if x is not None) == pytest.approx(3e-4)
