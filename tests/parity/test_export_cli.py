"""`lmforge export`: a tokenizer trained here + a tiny model of its family, saved as an lmforge directory,
exported, then loaded by transformers' AutoTokenizer and AutoModelFor...: the same ids (single texts, a
pair, special tokens) and the same logits (1e-5) as lmforge. Bad input exits 2 with one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.cli import main

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model
Tokenizer = pytest.importorskip("lmforge.tokenization.tokenizer").Tokenizer

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37, max_positions=64,
            hidden_dropout=0.0, attention_dropout=0.0)
# family -> (tokenizer kind, preset, head, HF Auto class, HF model class, HF tokenizer class)
CASES = {
    "bert": ("wordpiece", "bert-tiny", "mlm", "AutoModelForMaskedLM", "BertForMaskedLM", "BertTokenizer"),
    "gpt2": ("bpe", "gpt2", "clm", "AutoModelForCausalLM", "GPT2LMHeadModel", "GPT2Tokenizer"),
    "albert": ("unigram", "albert-base", "mlm", "AutoModelForMaskedLM", "AlbertForMaskedLM", "AlbertTokenizer"),
}
TEXTS = ["First Citizen: Before we proceed any further, hear me speak.", "Héllo WORLD, naïve café!",
         "  two  spaces and a [MASK] or <unk> inside", ""]
PAIR = ("You are all resolved rather to die", "than to famish?")


@pytest.fixture(scope="module")
def lines(refdata: Path) -> list[str]:
    return (refdata / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n")[:3000]


def lmforge_dir(family: str, lines: list[str], path: Path) -> tuple[Model, Tokenizer]:
    kind, preset, head, *_ = CASES[family]
    tok = Tokenizer.train(iter(lines), kind=kind, vocab_size=300 if kind != "bpe" else 400, show_progress=False)
    extra = dict(embedding_size=16) if family == "albert" else {}
    torch.manual_seed(0)
    model = Model.from_preset(preset, head=head, vocab_size=len(tok), **TINY, **extra).eval()
    with torch.no_grad():  # LayerNorms and biases off their init, so a dropped tensor would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


@pytest.mark.parametrize("family", list(CASES))
def test_export_loads_in_transformers_with_same_ids_and_logits(family: str, lines: list[str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, _, _, auto, hf_class, tok_class = CASES[family]
    model, tok = lmforge_dir(family, lines, tmp_path / "lm")
    assert main(["export", "--model", str(tmp_path / "lm"), "--out", str(tmp_path / "hf")]) == 0
    assert hf_class in capsys.readouterr().out
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = getattr(transformers, auto).from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == hf_class and type(hf_tok).__name__.removesuffix("Fast") == tok_class
    assert hf_tok.model_max_length == model.config.max_length  # a trained tokenizer gets the model's limit
    assert hf_tok.all_special_tokens == tok.all_special_tokens and hf_tok.all_special_ids == tok.all_special_ids
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == tok(text)["input_ids"], text
        assert hf_tok.decode(hf_tok(text)["input_ids"]) == tok.decode(tok(text)["input_ids"]), text
    ours_pair, hf_pair = tok(*PAIR), hf_tok(*PAIR)
    assert set(hf_pair) == set(ours_pair), "model inputs differ"
    for key in ours_pair:
        assert list(hf_pair[key]) == list(ours_pair[key]), key
    # a padded batch of pairs where the tokenizer has a pad token (GPT-2's has none: one row)
    rows = ([TEXTS[0], PAIR[0]], [TEXTS[1], PAIR[1]]) if tok.pad_token is not None else ([TEXTS[0]], [TEXTS[1]])
    pad = tok.pad_token is not None
    batch, hf_batch = tok(*rows, padding=pad, return_tensors="pt"), hf_tok(*rows, padding=pad, return_tensors="pt")
    for key in batch:
        assert torch.equal(batch[key], hf_batch[key]), key
    with torch.no_grad():
        ours, ref = model(**batch).logits, hf(**hf_batch).logits
    real = batch["attention_mask"].bool()  # logits at pads are not a contract (HF's padded rows may differ)
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)


def test_export_refuses_bad_out_and_a_missing_tokenizer(lines: list[str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    model, tok = lmforge_dir("gpt2", lines, tmp_path / "lm")

    def error(*argv: str) -> str:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lmforge export: error: ")
        return err

    assert "is the model directory" in error("--model", str(tmp_path / "lm"), "--out", str(tmp_path / "lm"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine\n")
    assert "--overwrite" in error("--model", str(tmp_path / "lm"), "--out", str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine\n"  # nothing written
    assert main(["export", "--model", str(tmp_path / "lm"), "--out", str(tmp_path / "busy"), "--overwrite"]) == 0
    assert (tmp_path / "busy" / "model.safetensors").is_file()
    capsys.readouterr()
    model.save_pretrained(tmp_path / "bare")  # no tokenizer files
    err = error("--model", str(tmp_path / "bare"), "--out", str(tmp_path / "out"))
    assert "no tokenizer" in err and "--tokenizer DIR" in err
    assert main(["export", "--model", str(tmp_path / "bare"), "--out", str(tmp_path / "out"),
                 "--tokenizer", str(tmp_path / "lm")]) == 0
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")("Hello")["input_ids"] == \
        tok("Hello")["input_ids"]
