"""Long documents: `lmforge finetune --max-length 4096` on a (tiny) BigBird model, classification and span QA.

The documents are real text (CoLA / SQuAD samples) made longer than BigBird's dense fallback (704 tokens), so
the block-sparse path runs in training and evaluation; SQuAD questions then need one window per question (the
answers sit past token 512, where a BERT-length window would have to slide)."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from lmforge.cli import main

TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2, hidden_dropout=0.0,
            attention_dropout=0.0)


@pytest.fixture(scope="module")
def tiny_bigbird(refdata, tmp_path_factory) -> Path:
    """bigbird-roberta-base's config at a tiny width (4096 positions, 64-token blocks) + a WordPiece tokenizer."""
    import torch

    from lmforge import Model, ModelConfig, Tokenizer

    torch.manual_seed(0)
    squad = json.loads((refdata / "squad" / "squad-v1.1-format-sample.json").read_text())
    text = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    text += [r.split("\t")[3] for r in (refdata / "glue" / "CoLA" / "train_sample.tsv").read_text().splitlines()]
    tok = Tokenizer.train(iter(text), kind="wordpiece", vocab_size=1500, show_progress=False)
    d = tmp_path_factory.mktemp("tiny-bigbird")
    config = ModelConfig.from_preset("bigbird-roberta-base", head="mlm", vocab_size=len(tok),
                                     sep_token_id=tok.sep_token_id, **TINY)
    Model(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def run_sparse(argv: list[str]) -> int:
    """``main(argv)``, failing if any layer fell back to dense attention (the inputs are long enough not to)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    fallbacks = [str(w.message) for w in caught if "full (dense) attention" in str(w.message)]
    assert not fallbacks, fallbacks
    return code


def long_classification(refdata: Path, out: Path) -> None:
    """Documents of 120 CoLA sentences (~1000+ tokens); label 1: a sentence about a book sits somewhere inside."""
    rows = [r.split("\t") for r in (refdata / "glue" / "CoLA" / "train_sample.tsv").read_text().splitlines()]
    sentences = [r[3] for r in rows if "book" not in r[3]]
    rng = random.Random(0)
    out.mkdir()
    for split, n in (("train", 8), ("dev", 4)):
        with open(out / f"{split}.jsonl", "w") as f:
            for i in range(n):
                doc = [rng.choice(sentences) for _ in range(120)]
                if i % 2:
                    doc.insert(rng.randrange(120), "Mary read the book.")
                f.write(json.dumps({"text": " ".join(doc), "label": str(i % 2)}) + "\n")


def long_squad(refdata: Path, out: Path) -> int:
    """The SQuAD v1.1 sample with every context preceded by the other paragraphs (answers shifted past 512)."""
    data = json.loads((refdata / "squad" / "squad-v1.1-format-sample.json").read_text())
    contexts = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    filler = " ".join(contexts * 2) + " "
    n = 0
    for article in data["data"]:
        for p in article["paragraphs"]:
            p["context"] = filler + p["context"]
            for qa in p["qas"]:
                n += 1
                for ans in qa["answers"]:
                    ans["answer_start"] += len(filler)
    out.mkdir()
    for split in ("train", "dev"):
        (out / f"{split}.json").write_text(json.dumps(data))
    return n


def test_long_document_classification(refdata, tiny_bigbird, tmp_path, capsys):
    from lmforge import Model, Tokenizer

    long_classification(refdata, tmp_path / "data")
    tok = Tokenizer.from_pretrained(tiny_bigbird)
    first = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])["text"]
    assert 704 < len(tok(first)["input_ids"]) <= 4096  # past the dense fallback, within one input
    out = tmp_path / "run"
    code = run_sparse(["finetune", "--model", str(tiny_bigbird), "--task", "text", "--data", str(tmp_path / "data"),
                 "--out", str(out), "--epochs", "1", "--batch-size", "4", "--max-length", "4096", "--seed", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "longer than --max-length" not in captured.err
    model = Model.from_pretrained(out)
    assert model.config.attention_kind == "bigbird" and model.config.head == "seq-cls"
    assert "accuracy" in json.loads((out / "metrics.json").read_text())


def test_long_document_qa_needs_one_window(refdata, tiny_bigbird, tmp_path, capsys):
    from lmforge import Tokenizer
    from lmforge.tasks import get_task

    n = long_squad(refdata, tmp_path / "data")
    task = get_task("squad")
    tok = Tokenizer.from_pretrained(tiny_bigbird)
    examples = task.read(tmp_path / "data", "dev")
    features = [f for e in examples for f in task.featurize(e, tok, max_length=4096)]
    assert len(features) == len(examples) == n  # one window each: no sliding needed up to the model length
    assert max(len(f["input_ids"]) for f in features) > 1000
    assert len([f for e in examples for f in task.featurize(e, tok, max_length=512)]) > n  # BERT length: windows
    out = tmp_path / "run"
    code = run_sparse(["finetune", "--model", str(tiny_bigbird), "--task", "squad", "--data", str(tmp_path / "data"),
                 "--out", str(out), "--epochs", "1", "--batch-size", "4", "--max-length", "4096"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    scores = json.loads((out / "metrics.json").read_text())
    assert {"exact", "f1"} <= set(scores)
    assert len(json.loads((out / "predictions.json").read_text())) == n
