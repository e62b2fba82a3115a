"""Fine-tuning behaviour a user relies on, each checked on the tiny models: bad input through the CLI
(exit 2, file:line), SQuAD answers that do not match their context, truncation counts, a checkpoint whose
head does not fit the task, --from-scratch, the lr / head-lr / layer-decay parameter groups the trainer
really uses, keeping the best epoch and early stopping."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.tasks import get_task


SST_HEADER = "sentence\tlabel"


def _finetune(model: str | Path, data: Path, out: Path, *extra: str, task: str = "glue-sst2") -> int:
    return main(["finetune", "--model", str(model), "--task", task, "--data", str(data), "--out", str(out), *extra])


# ----------------------------------------------------------------------------- bad input, through the CLI

def test_cli_wrong_column_count_names_file_and_line(tiny_encoder, tmp_path, capsys):
    (tmp_path / "train.tsv").write_text("gj04\t1\t\tFine sentence.\ngj04\t0\tA broken row\n")
    (tmp_path / "dev.tsv").write_text("gj04\t1\t\tFine sentence.\n")
    assert _finetune(tiny_encoder, tmp_path, tmp_path / "o", task="glue-cola") == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'train.tsv'}:2: 3 tab-separated fields; CoLA rows have 4" in err
    assert "Traceback" not in err


def test_cli_label_outside_the_label_set(tiny_encoder, tmp_path, capsys):
    (tmp_path / "train.tsv").write_text(f"{SST_HEADER}\ngood\t1\nbad\t0\n")
    (tmp_path / "dev.tsv").write_text(f"{SST_HEADER}\ngood\t1\nodd\t2\n")
    assert _finetune(tiny_encoder, tmp_path, tmp_path / "o") == 2
    assert f"{tmp_path / 'dev.tsv'}:3: label '2' is not one of this task's labels ['0', '1']" in capsys.readouterr().err


def test_cli_empty_split(tiny_encoder, tmp_path, capsys):
    (tmp_path / "train.tsv").write_text(f"{SST_HEADER}\ngood\t1\nbad\t0\n")
    (tmp_path / "dev.tsv").write_text(f"{SST_HEADER}\n")
    assert _finetune(tiny_encoder, tmp_path, tmp_path / "o") == 2
    assert f"{tmp_path / 'dev.tsv'}: the 'dev' split has no examples" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_encoder), "--task", "glue-sst2", "--data", str(tmp_path),
                 "--split", "test"]) == 2
    assert "no 'test' split" in capsys.readouterr().err


def test_cli_over_long_inputs_are_truncated_and_counted(tiny_encoder, tmp_path, capsys):
    from lmforge import Tokenizer

    tok = Tokenizer.from_pretrained(tiny_encoder)
    sentences = [("a fine film " * k).strip() for k in range(1, 13)]
    rows = [f"{s}\t{k % 2}" for k, s in enumerate(sentences)]
    (tmp_path / "train.tsv").write_text("\n".join([SST_HEADER, *rows]) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join([SST_HEADER, *rows[:5]]) + "\n")
    long = sum(len(tok(s)["input_ids"]) > 16 for s in sentences)
    long_dev = sum(len(tok(s)["input_ids"]) > 16 for s in sentences[:5])
    assert 0 < long < len(sentences) and 0 < long_dev < 5
    assert _finetune(tiny_encoder, tmp_path, tmp_path / "o", "--epochs", "1", "--max-length", "16") == 0
    err = capsys.readouterr().err
    assert f"warning: {long} of {len(sentences)} train inputs were longer than --max-length 16 tokens" in err
    assert f"warning: {long_dev} of 5 dev inputs were longer than --max-length 16 tokens" in err


def _squad(path: Path, bad_start: int) -> None:
    context = "Paris is the capital of France. Rome is the capital of Italy."
    qas = [{"id": "ok1", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]},
           {"id": "ok2", "question": "What is the capital of Italy?", "answers": [{"text": "Rome", "answer_start": 32}]},
           {"id": "bad", "question": "Which country has Paris?", "answers": [{"text": "France", "answer_start": bad_start}]}]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context,
                                                                                        "qas": qas}]}]}))


def test_squad_answer_not_at_answer_start_is_counted_reported_skipped_and_still_scored(tiny_encoder, bert_tok,
                                                                                        tmp_path, capsys):
    from lmforge.tasks import featurize_all

    _squad(tmp_path / "train.json", bad_start=3)  # 'France' is at 24, not 3
    _squad(tmp_path / "dev.json", bad_start=3)
    task = get_task("squad")
    examples = task.read(tmp_path, "train")
    train, _ = featurize_all(task, examples, bert_tok, max_length=64, training=True)
    scored, _ = featurize_all(task, examples, bert_tok, max_length=64, training=False)
    assert {f["example_index"] for f in train} == {0, 1}  # skipped for training
    assert {f["example_index"] for f in scored} == {0, 1, 2}  # but still predicted and scored
    out = tmp_path / "o"
    assert _finetune(tiny_encoder, tmp_path, out, "--epochs", "1", "--max-length", "64", task="squad") == 0
    err = capsys.readouterr().err
    # reported once, with the count and the question id, then the training skip
    assert err.count("whose answer text is not in the context at answer_start") == 1
    assert "1 question(s) whose answer text is not in the context at answer_start were skipped for training " \
           "(first: bad)" in err
    assert "1 train question(s) without a locatable answer were skipped for training" in err
    assert set(json.loads((out / "predictions.json").read_text())) == {"ok1", "ok2", "bad"}
    assert json.loads((out / "metrics.json").read_text())["total"] == 3


# ----------------------------------------------------------------------------- which weights a run starts from

def test_mlm_checkpoint_for_qa_loads_its_body_and_adds_a_fresh_head_said_in_one_line(tiny_encoder):
    from safetensors.torch import load_file

    from lmforge import Tokenizer
    from lmforge.recipes.finetune import load_model

    saved = load_file(str(tiny_encoder / "model.safetensors"))
    lines: list[str] = []
    task = get_task("squad-v2")
    model, decoder = load_model(str(tiny_encoder), task, Tokenizer.from_pretrained(tiny_encoder), log=lines.append)
    assert decoder is None and model.config.head == "qa"
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0] == (f"{tiny_encoder} has a 'mlm' head; loaded its body and added a fresh 'qa' head "
                        "(2 output(s)) for squad-v2")
    state = model.state_dict()
    body = [k for k in saved if k.startswith("body.")]
    assert body and all(torch.equal(state[k], saved[k]) for k in body)  # every body weight is the checkpoint's
    assert not any(k.startswith("head.mlm") for k in state) and "head.qa.weight" in state
    # --from-scratch: the same architecture, none of the checkpoint's weights
    lines.clear()
    fresh, _ = load_model(str(tiny_encoder), task, Tokenizer.from_pretrained(tiny_encoder), from_scratch=True,
                          log=lines.append)
    assert "with fresh weights" in lines[0]
    fresh_state = fresh.state_dict()
    assert {k: v.shape for k, v in fresh_state.items()} == {k: v.shape for k, v in state.items()}
    assert not torch.equal(fresh_state["body.layers.0.attn.qkv.weight"], saved["body.layers.0.attn.qkv.weight"])
    assert not torch.equal(fresh_state["body.embeddings.word.weight"], saved["body.embeddings.word.weight"])


def test_a_fine_tuned_checkpoint_with_the_right_head_is_loaded_whole(tiny_encoder, tmp_path):
    from lmforge import Model, Tokenizer
    from lmforge.recipes.finetune import load_model

    model = Model.from_pretrained(tiny_encoder, head="seq-cls", num_labels=2)
    model.save_pretrained(tmp_path)
    lines: list[str] = []
    again, _ = load_model(str(tmp_path), get_task("glue-sst2"), Tokenizer.from_pretrained(tiny_encoder),
                          log=lines.append)
    assert lines == []  # nothing to say: the head fits
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


# ----------------------------------------------------------------------------- optimisation, as the trainer runs it

def test_lr_head_lr_and_layer_decay_reach_the_optimizer(tiny_encoder, refdata, tmp_path, monkeypatch):
    import lmforge.train.loop as loop

    seen: list[list[dict]] = []
    real = loop.build_optimizer

    def spy(groups, config):
        seen.append(groups)
        return real(groups, config)

    monkeypatch.setattr(loop, "build_optimizer", spy)
    lr, head_lr, decay = 1e-3, 5e-2, 0.5
    assert _finetune(tiny_encoder, refdata / "glue" / "SST-2", tmp_path / "o", "--train-split", "dev", "--epochs",
                     "0.1", "--max-length", "16", "--lr", str(lr), "--head-lr", str(head_lr), "--layer-lr-decay",
                     str(decay)) == 0
    (groups,) = seen
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    L = 2  # the tiny encoder's layers
    for name, value in lr_of.items():
        if name.startswith("head."):
            want = head_lr  # the fresh classifier
        elif ".layers." in name:
            want = lr * decay ** (L - int(name.split(".layers.")[1].split(".")[0]))
        elif "embeddings." in name:
            want = lr * decay ** (L + 1)
        else:
            want = lr  # the pooler sits on top of the last layer
        assert value == pytest.approx(want), name
    assert any(n.startswith("head.") for n in lr_of) and any(n.startswith("body.pooler") for n in lr_of)
    # no weight decay on biases and LayerNorm weights
    for g in groups:
        assert (g["weight_decay"] == 0.0) == all(n.endswith("bias") or "norm" in n for n in g["names"])


def test_the_best_epoch_is_kept_and_early_stopping_ends_the_run(tiny_encoder, refdata, tmp_path, capsys):
    # dev = the training sentences with flipped labels: the better the model learns its training
    # split, the worse it scores on dev, so the best epoch is an early one and never the last
    rows = (refdata / "glue" / "SST-2" / "dev_sample.tsv").read_text().splitlines()
    data = tmp_path / "flipped"
    data.mkdir()
    (data / "train.tsv").write_text("\n".join(rows) + "\n")
    flipped = [f"{r.rsplit(chr(9), 1)[0]}\t{1 - int(r.rsplit(chr(9), 1)[1])}" for r in rows[1:]]
    (data / "dev.tsv").write_text("\n".join([rows[0], *flipped]) + "\n")
    out = tmp_path / "best"
    assert _finetune(tiny_encoder, data, out, "--epochs", "5", "--lr", "5e-3", "--max-length", "24",
                     "--seed", "0") == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("split") == "val"]
    assert len(val) == 5
    best = max(val, key=lambda r: r["accuracy"])  # the first of the best on ties, as the trainer keeps it
    assert best["step"] < val[-1]["step"] and best["accuracy"] > val[-1]["accuracy"] + 0.05, val
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["accuracy"] == pytest.approx(best["accuracy"], abs=1e-12)
    assert json.loads((out / "best" / "best.json").read_text())["step"] == best["step"]
    # the final model is the best epoch's: scoring it again gives the best accuracy, not the last one
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--split", "dev"]) == 0
    assert f"accuracy {best['accuracy']:.4f}" in capsys.readouterr().out
    sst = refdata / "glue" / "SST-2"
    # a learning rate too small to change any prediction: no improvement after epoch 1, patience 1 stops at 2
    out = tmp_path / "stop"
    assert _finetune(tiny_encoder, sst, out, "--train-split", "dev", "--epochs", "5", "--lr", "1e-12",
                     "--max-length", "24", "--patience", "1") == 0
    err = capsys.readouterr().err
    assert "stopped early" in err
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in val if r.get("split") == "val"]) == 2


def test_a_bare_preset_trains_from_scratch_with_the_given_tokenizer(tiny_encoder, refdata, tmp_path, capsys):
    from lmforge import Model, Tokenizer

    out = tmp_path / "o"
    assert _finetune("bert-tiny", refdata / "glue" / "SST-2", out, "--tokenizer", str(tiny_encoder),
                     "--train-split", "dev", "--epochs", "0.25", "--max-length", "16") == 0
    assert "built bert-tiny with fresh weights and a 'seq-cls' head (2 output(s))" in capsys.readouterr().err
    model = Model.from_pretrained(out)
    assert model.config.vocab_size == len(Tokenizer.from_pretrained(out)) == len(Tokenizer.from_pretrained(tiny_encoder))
    assert model.config.hidden_size == 128 and model.config.head == "seq-cls"  # the preset's own size


def test_a_gpt1_head_trained_for_another_use_is_started_fresh(tiny_decoder, tmp_path):
    from lmforge import Model, Tokenizer
    from lmforge.recipes.finetune import load_model

    swag = Model.from_pretrained(tiny_decoder, head="extract", num_labels=1, extract_combine="choice")
    with torch.no_grad():
        swag.head.classifier.weight.fill_(0.5)  # as if trained on SWAG: one score per ending
    swag.save_pretrained(tmp_path)
    lines: list[str] = []
    model, decoder = load_model(str(tmp_path), get_task("glue-stsb"), Tokenizer.from_pretrained(tiny_decoder),
                                log=lines.append)
    assert decoder is not None and model.config.extract_combine == "sum" and model.config.num_labels == 1
    assert len(lines) == 1 and "fresh 'extract' head (1 output(s)) for glue-stsb" in lines[0]
    assert not torch.equal(model.head.classifier.weight, swag.head.classifier.weight)  # really fresh
    assert torch.equal(model.body.layers[0].attn.qkv.weight, swag.body.layers[0].attn.qkv.weight)  # body kept


def test_an_hf_checkpoint_directory_is_converted_and_gets_the_task_head(tiny_encoder, tmp_path):
    from lmforge import Model, Tokenizer
    from lmforge.recipes.finetune import load_model

    pretrained = Model.from_pretrained(tiny_encoder)
    pretrained.export_hf(tmp_path)  # BertForMaskedLM layout, config.json with model_type
    assert "model_type" in json.loads((tmp_path / "config.json").read_text())
    lines: list[str] = []
    model, _ = load_model(str(tmp_path), get_task("glue-mnli"), Tokenizer.from_pretrained(tiny_encoder),
                          log=lines.append)
    assert model.config.head == "seq-cls" and model.config.num_labels == 3
    assert len(lines) == 1 and "fresh 'seq-cls' head (3 output(s)) for glue-mnli" in lines[0]
    mine = model.state_dict()
    for name, tensor in pretrained.state_dict().items():
        if name.startswith("body.") and not name.startswith("body.pooler"):  # BertForMaskedLM has no pooler
            assert torch.equal(mine[name], tensor), name


def test_roberta_body_with_a_pair_template_that_numbers_segments(tiny_decoder, refdata, tmp_path, capsys):
    """A RoBERTa-style body has one segment embedding; a byte-level BPE tokenizer trained by lmforge gives
    the second text segment id 1. Fine-tuning on a pair task must not index past the table."""
    from lmforge import Model, ModelConfig, Tokenizer

    tok = Tokenizer.from_pretrained(tiny_decoder)
    assert 1 in tok("a premise", "a hypothesis", return_token_type_ids=True)["token_type_ids"]
    torch.manual_seed(0)
    config = ModelConfig.from_preset("roberta-base", head="mlm", vocab_size=len(tok), hidden_size=32, num_heads=2,
                                     intermediate_size=64, num_layers=2, max_positions=66)
    assert config.type_vocab_size == 1
    Model(config).save_pretrained(tmp_path / "roberta")
    tok.save_pretrained(tmp_path / "roberta")
    out = tmp_path / "rte"
    assert _finetune(tmp_path / "roberta", refdata / "glue" / "RTE", out, "--train-split", "val", "--eval-split",
                     "val", "--epochs", "0.2", "--max-length", "32", task="glue-rte") == 0, capsys.readouterr().err
    assert main(["evaluate", "--model", str(out), "--data", str(refdata / "glue" / "RTE"), "--split", "val"]) == 0
    assert "accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------- Ctrl-C, --resume, the output directory

def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_ctrl_c_then_resume_ends_as_an_uninterrupted_run(tiny_encoder, refdata, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from lmforge.recipes.finetune import TaskObjective

    sst = refdata / "glue" / "SST-2"
    args = ["--train-split", "dev", "--eval-split", "dev", "--epochs", "2", "--batch-size", "16", "--max-length", "24",
            "--lr", "1e-3"]
    assert _finetune(tiny_encoder, sst, tmp_path / "ref", *args) == 0
    run = tmp_path / "run"
    calls = {"n": 0}
    real_loss = TaskObjective.loss

    def ctrl_c_in_call_5(self, model, batch):  # as a Ctrl-C in the middle of step 5 would
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(self, model, batch)

    monkeypatch.setattr(TaskObjective, "loss", ctrl_c_in_call_5)
    capsys.readouterr()
    assert _finetune(tiny_encoder, sst, run, *args) == 130
    err = capsys.readouterr().err
    assert f"lmforge finetune: interrupted after step 5 of " in err
    assert f"checkpoint written: {run / 'checkpoints' / 'step-00000005'}" in err
    assert "to continue, run: lmforge finetune --model" in err and err.rstrip().endswith(" --resume")
    monkeypatch.setattr(TaskObjective, "loss", real_loss)
    assert _finetune(tiny_encoder, sst, run, *args, "--resume") == 0
    assert (run / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()
    assert json.loads((run / "metrics.json").read_text()) == json.loads((tmp_path / "ref" / "metrics.json").read_text())
    # finished: --resume leaves it as it is; without --resume (or --overwrite) the directory is refused
    before = _snapshot(run)
    capsys.readouterr()
    assert _finetune(tiny_encoder, sst, run, *args, "--resume") == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert _finetune(tiny_encoder, sst, run, *args, "--resume", "--lr", "2e-3") == 2  # other settings: listed
    assert "lr 0.001 -> 0.002" in capsys.readouterr().err
    assert _snapshot(run) == before
    assert _finetune(tiny_encoder, sst, run, *args) == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert _finetune(tiny_encoder, sst, run, *args, "--overwrite", "--epochs", "1") == 0
    assert not (run / "checkpoints").exists()  # the interrupted run's checkpoint went with --overwrite
