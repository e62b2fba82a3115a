"""`lmforge distill` end to end on toy-language shards with tiny teachers: each recipe lowers its loss and logs
each term, a resumed run is bitwise the uninterrupted one, a resume with other recipe settings is refused,
and bad input gets one message (exit 2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmforge import Model, ModelConfig, Tokenizer
from lmforge.cli import main
from lmforge.train.logging import read_metrics

TEACHER = dict(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, max_positions=64,
               hidden_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def teachers(toy_shards, tmp_path_factory) -> dict[str, Path]:
    """A 4-layer BERT (mlm head) over the WordPiece shards' tokenizer, a 2-layer GPT over the BPE ones."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name, kind, preset, head in (("bert", "wordpiece", "bert-tiny", "mlm"), ("gpt", "bpe", "gpt-tiny", "clm")):
        tok = Tokenizer.from_pretrained(toy_shards[f"tok-{kind}"])
        torch.manual_seed(0)
        extra = {} if name == "bert" else {"pad_token_id": None, "num_layers": 2}
        config = ModelConfig.from_preset(preset, head=head, vocab_size=len(tok), **{**TEACHER, **extra})
        model = Model(config)
        with torch.no_grad():  # a teacher with opinions: a fresh init predicts almost uniformly
            for param in model.parameters():
                param.add_(torch.randn(param.shape) * 0.3)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    (root / "student.yaml").write_text("preset: bert-tiny\nnum_layers: 2\nhidden_size: 16\nnum_heads: 2\n"
                                       "intermediate_size: 32\nmax_positions: 64\nhidden_dropout: 0.0\n")
    out["student_yaml"] = root / "student.yaml"
    return out


def _args(teacher: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--batch-size", "8",
            "--seq-len", "32", "--lr", "3e-3", "--warmup", "2", "--log-every", "2", "--val-batches", "2",
            "--no-progress", *extra]


def _train(out: Path) -> list[dict]:
    return [r for r in read_metrics(out) if r["split"] == "train"]


def test_distilbert_lowers_its_loss_logs_each_term_and_saves_a_distilbert(teachers, toy_shards, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], out, "--max-steps", "30",
                      "--student-init", "random")) == 0
    assert "student: 2 layers of 32, random init" in capsys.readouterr().out
    train = _train(out)
    assert {"kl_loss", "mlm_loss", "cos_loss", "teacher_agreement"} <= train[0].keys()
    for term in ("kl_loss", "cos_loss", "loss"):
        assert sum(r[term] for r in train[-3:]) < sum(r[term] for r in train[:3]), term
    val = [r for r in read_metrics(out) if r["split"] == "val"][-1]
    assert {"kl_loss", "cos_loss", "mlm_loss"} <= val.keys()
    student = Model.from_pretrained(out)
    c = student.config
    assert (c.family, c.num_layers, c.type_vocab_size, c.head) == ("distilbert", 2, 0, "mlm")
    assert (out / "tokenizer.json").is_file()


def test_tinybert_and_logits_recipes_learn(teachers, toy_shards, tmp_path, capsys):
    tiny = tmp_path / "tiny"
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], tiny, "--recipe", "tinybert", "--student",
                      str(teachers["student_yaml"]), "--max-steps", "20")) == 0
    text = capsys.readouterr().out
    assert "attention map [1, 3], hidden-state map [0, 2, 4]" in text and "projection 16 -> 32" in text
    train = _train(tiny)
    assert sum(r["hidden_loss"] for r in train[-3:]) < sum(r["hidden_loss"] for r in train[:3])
    assert "att_loss" in train[0]
    # a causal decoder: a 1-layer GPT from the 2-layer one (initialised from its layer 0)
    gpt = tmp_path / "gpt"
    assert main(_args(teachers["gpt"], toy_shards["bpe"], gpt, "--recipe", "logits", "--student-layers", "1",
                      "--student-init", "random", "--max-steps", "20")) == 0
    train = _train(gpt)
    assert {"kl_loss", "clm_loss"} <= train[0].keys() and "cos_loss" not in train[0]
    assert sum(r["kl_loss"] for r in train[-3:]) < sum(r["kl_loss"] for r in train[:3])
    assert Model.from_pretrained(gpt).config.causal


def test_resume_is_bitwise_and_other_recipe_settings_are_refused(teachers, toy_shards, tmp_path, capsys):
    common = ("--max-steps", "8", "--save-every", "4", "--keep", "5")
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], ref, *common)) == 0
    # an interrupted run: only the checkpoint of step 4 is there
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(ref / "checkpoints" / "step-00000004", run / "checkpoints" / "step-00000004")
    capsys.readouterr()
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], run, *common, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (ref / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    assert [r["loss"] for r in _train(run)] == [r["loss"] for r in _train(ref) if r["step"] > 4]
    # the same run with another recipe setting: refused, naming it
    (run / "trainer_state.json").unlink()
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], run, *common, "--resume", "--alpha-ce", "1")) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "alpha_ce 5.0 -> 1.0" in err and "--allow-changes" in err


def test_bad_input(teachers, toy_shards, tmp_path, capsys):
    def refused(*extra: str, teacher: Path = teachers["bert"]) -> str:
        assert main(_args(teacher, toy_shards["wordpiece"], tmp_path / "bad", "--max-steps", "2", *extra)) == 2
        return capsys.readouterr().err

    other_vocab = tmp_path / "vocab.yaml"
    other_vocab.write_text("preset: bert-tiny\nvocab_size: 500\nnum_layers: 1\n")
    assert "teacher has a vocabulary of 300 ids and the student config" in refused("--student", str(other_vocab))
    assert "500" in refused("--student", str(other_vocab))
    assert "points past the teacher's depth: 9 (the teacher has layers 0 to 3)" in refused("--layer-map", "0,9")
    assert "gives 3 teacher layers for a student of 2" in refused("--layer-map", "0,1,2")
    four_heads = tmp_path / "heads.yaml"
    four_heads.write_text("preset: bert-tiny\nnum_layers: 2\nhidden_size: 16\nnum_heads: 4\nmax_positions: 64\n")
    assert "needs the teacher's 2 heads (it has 4)" in refused("--recipe", "tinybert", "--student", str(four_heads))
    assert "needs --student" in refused("--recipe", "tinybert")
    assert "no temperature or alpha" in refused("--recipe", "tinybert", "--student", str(four_heads),
                                                "--alpha-ce", "1")
    cls = tmp_path / "cls-teacher"
    Model.from_pretrained(teachers["bert"], head="seq-cls").save_pretrained(cls)
    Tokenizer.from_pretrained(teachers["bert"]).save_pretrained(cls)
    assert "has the 'seq-cls' head; give the pre-trained checkpoint" in refused(teacher=cls)
    # the GPT teacher's tokenizer did not make the WordPiece shards
    assert "another tokenizer than the shards" in refused(teacher=teachers["gpt"])
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_tinybert_task_distillation_two_stages(teachers, toy_shards, tmp_path, capsys):
    """General student -> stage 1 (intermediate layers) -> stage 2 (soft cross-entropy to a 'fine-tuned'
    teacher); a teacher that was not fine-tuned on the task is refused."""
    from lmforge.data.toyland import generate

    generate(tmp_path / "toy", docs=5, examples=48, seed=0)
    teacher = tmp_path / "cola-teacher"
    Model.from_pretrained(teachers["bert"], head="seq-cls").save_pretrained(teacher)
    Tokenizer.from_pretrained(teachers["bert"]).save_pretrained(teacher)
    general = tmp_path / "general"
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], general, "--recipe", "tinybert", "--student",
                      str(teachers["student_yaml"]), "--max-steps", "2")) == 0
    task = ["distill", "--teacher", str(teacher), "--student", str(general), "--recipe", "tinybert", "--task",
            "glue-cola", "--task-data", str(tmp_path / "toy" / "cola"), "--out", str(tmp_path / "task"),
            "--task-epochs", "2", "--pred-epochs", "1", "--batch-size", "16", "--seq-len", "32", "--lr", "3e-3",
            "--no-progress"]
    assert main(task) == 2
    assert "needs a teacher fine-tuned on glue-cola" in capsys.readouterr().err
    (teacher / "task.json").write_text('{"task": "glue-cola", "labels": ["0", "1"]}')
    assert main(task) == 0
    stage1 = _train(tmp_path / "task" / "intermediate")
    stage2 = _train(tmp_path / "task" / "prediction")
    assert {"att_loss", "hidden_loss"} <= stage1[0].keys() and "pred_loss" in stage2[0]
    assert stage1[-1]["hidden_loss"] < stage1[0]["hidden_loss"]
    assert (tmp_path / "task" / "prediction" / "metrics.json").is_file()


def test_prediction_stage_is_soft_cross_entropy_at_t1(teachers):
    from lmforge.recipes.distill import TaskDistillation

    torch.manual_seed(0)
    teacher = Model.from_pretrained(teachers["bert"], head="seq-cls").eval()
    student = Model(ModelConfig.from_preset("bert-tiny", head="seq-cls", vocab_size=300, num_layers=2,
                                            hidden_size=16, num_heads=2, intermediate_size=32, max_positions=64)).eval()
    base = type("Base", (), {"head": "", "seq_len": 0})()
    objective = TaskDistillation(base, teacher, student, stage="prediction")
    ids = torch.randint(5, 300, (4, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1, 0])}
    loss, _ = objective.loss(student, batch)
    s, t = student(ids).logits.double(), teacher(ids).logits.double()
    want = (-(t.softmax(-1)) * s.log_softmax(-1)).mean()  # task_distill.py soft_cross_entropy, T = 1
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_cached_teacher_logits_for_a_decoder(teachers, toy_shards, tmp_path, capsys, monkeypatch):
    """--cache-topk: the teacher runs once over the training windows; with k = the vocabulary the cached run
    is the live run (same losses), and a second run reuses the cache without calling the teacher."""
    common = ("--recipe", "logits", "--student-layers", "1", "--max-steps", "6", "--val-batches", "0")
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert main(_args(teachers["gpt"], toy_shards["bpe"], live, *common)) == 0
    assert main(_args(teachers["gpt"], toy_shards["bpe"], cached, *common, "--cache-topk", "300")) == 0
    assert "caching the teacher's top-300 logits" in capsys.readouterr().out
    for a, b in zip(_train(live), _train(cached)):
        assert a["kl_loss"] == pytest.approx(b["kl_loss"], rel=1e-4, abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    meta = json.loads((cached / "teacher-topk" / "meta.json").read_text())
    assert meta["k"] == 300 and meta["seq_len"] == 32

    forward = Model.forward

    def student_only(self, *a, **k):  # the teacher has 2 layers, the student 1
        assert self.config.num_layers == 1, "the teacher ran although its logits are cached"
        return forward(self, *a, **k)

    again = tmp_path / "again"
    shutil.copytree(cached / "teacher-topk", again / "teacher-topk")
    monkeypatch.setattr(Model, "forward", student_only)
    assert main(_args(teachers["gpt"], toy_shards["bpe"], again, *common, "--cache-topk", "300", "--resume")) == 0
    assert "caching" not in capsys.readouterr().out
    assert main(_args(teachers["bert"], toy_shards["wordpiece"], tmp_path / "bad", "--cache-topk", "5")) == 2
    assert "for --recipe logits with a causal teacher" in capsys.readouterr().err
