"""`lmforge tokenizer train` and `lmforge tokenize` end to end (in-process, on tiny data)."""
from __future__ import annotations

import json

from lmforge.cli import main


def test_train_then_tokenize(tmp_path, corpus, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "600", "--out", str(out),
                 "--min-frequency", "2", "--no-progress", str(corpus)]) == 0
    printed = capsys.readouterr().out
    assert "trained a wordpiece tokenizer (bert conventions) with 600 tokens" in printed
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                               "special_tokens_map.json"}
    assert main(["tokenize", "--tokenizer", str(out), "First Citizen", "--pair", "Speak.", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tokens"][0] == "[CLS]" and got["tokens"].count("[SEP]") == 2
    assert got["token_type_ids"][-1] == 1 and len(got["input_ids"]) == len(got["offsets"])
    assert main(["tokenize", "--tokenizer", str(out), "First Citizen"]) == 0
    table = capsys.readouterr().out
    assert "[CLS]" in table and table.splitlines()[-1].startswith("ids: 2 ")


def test_bpe_roberta_and_cased(tmp_path, corpus, capsys):
    out = tmp_path / "rob"
    assert main(["tokenizer", "train", "--kind", "bpe", "--family", "roberta", "--vocab-size", "400", "--out",
                 str(out), "--no-progress", str(corpus)]) == 0
    capsys.readouterr()
    assert main(["tokenize", "--tokenizer", str(out), "a b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["<s>", "a", "Ġb", "</s>"]


def test_real_gpt2_files(refdata, capsys):
    assert main(["tokenize", "--tokenizer", str(refdata / "tokenizers/gpt2"), "I want to go home.", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_ids"] == [40, 765, 284, 467, 1363, 13]


def test_user_errors_exit_2(tmp_path, corpus, capsys):
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "100", "--out", str(tmp_path / "x"),
                 "--no-progress", str(corpus)]) == 2
    assert "vocab_size=100 is smaller than the 256-byte alphabet" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--kind", "unigram", "--vocab-size", "500", "--out", str(tmp_path / "x"),
                 "--no-progress", str(tmp_path / "missing.txt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["tokenize", "--tokenizer", str(tmp_path), "hi"]) == 2
    assert "no tokenizer files" in capsys.readouterr().err


def test_cli_progress_is_on_unless_no_progress(monkeypatch, tmp_path, corpus, capsys):
    from lmforge.tokenization import train as train_mod

    seen: list = []
    real = train_mod.trainers.BpeTrainer
    monkeypatch.setattr(train_mod.trainers, "BpeTrainer", lambda **kw: seen.append(kw["show_progress"]) or real(**kw))
    for flags, want in (([], True), (["--no-progress"], False)):
        assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out",
                     str(tmp_path / f"t{len(flags)}"), *flags, str(corpus)]) == 0
        assert seen.pop() is want
    capsys.readouterr()


def test_unigram_from_jsonl_gz_with_text_field(tmp_path, corpus, capsys):
    import gzip

    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"body": t}) + "\n" for t in corpus.read_text(encoding="utf-8").splitlines() if t)
    out = tmp_path / "uni"
    assert main(["tokenizer", "train", "--kind", "unigram", "--vocab-size", "500", "--text-field", "body",
                 "--out", str(out), "--no-progress", str(path)]) == 0
    assert "trained a unigram tokenizer (albert conventions) with 500 tokens" in capsys.readouterr().out
    assert main(["tokenize", "--tokenizer", str(out), "the king", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tokens"][0] == "[CLS]" and got["tokens"][-1] == "[SEP]" and got["tokens"][1].startswith("▁")
    assert main(["tokenizer", "train", "--kind", "unigram", "--vocab-size", "500", "--out", str(out),
                 "--no-progress", "--overwrite", str(path)]) == 2  # the default field "text" is not there
    assert "no string field 'text'; pass --text-field NAME" in capsys.readouterr().err


def test_tokenize_family_and_no_special_tokens(refdata, capsys):
    gpt2 = str(refdata / "tokenizers/gpt2")
    assert main(["tokenize", "--tokenizer", gpt2, "--family", "roberta", "Hi there", "--pair", "Yo", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tokens"] == ["<s>", "Hi", "Ġthere", "</s>", "</s>", "Yo", "</s>"]
    assert main(["tokenize", "--tokenizer", str(refdata / "tokenizers/bert-base-uncased"), "Hi there",
                 "--no-special-tokens", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_ids"] == [7632, 2045]
