"""`lmforge prepare` end to end: writes shards, says so; the second run is a no-op; bad input exits 2."""
from __future__ import annotations

import pytest

from lmforge.cli import main
from lmforge.data.shards import ShardDataset

tokenization = pytest.importorskip(
    "lmforge.tokenization.tokenizer", reason="needs the lmforge Tokenizer (lmforge/tokenization/, tokenizer issue)")


@pytest.fixture()
def tok_dir(refdata, tmp_path):
    tok = tokenization.Tokenizer.from_pretrained(refdata / "tokenizers" / "bert-base-uncased")
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_prepare_then_noop(refdata, tok_dir, tmp_path, capsys) -> None:
    corpus = tmp_path / "shakespeare.txt"  # the first 8,000 lines keep the test quick
    corpus.write_text("\n".join((refdata / "text" / "tinyshakespeare.txt").read_text().splitlines()[:8000]) + "\n")
    args = ["prepare", "--tokenizer", str(tok_dir), "--out", str(tmp_path / "shards"), "--doc-mode", "blank",
            "--val-fraction", "0.05", "--no-progress", str(corpus)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "uint16" in out and "train" in out and "val" in out
    train = ShardDataset(tmp_path / "shards", "train")
    val = ShardDataset(tmp_path / "shards", "val")
    assert train.num_tokens > 50_000 and val.num_documents > 50
    train.verify_tokenizer(train.load_tokenizer())  # the copied tokenizer is the one used
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out


def test_prepare_bad_input_exits_2(tok_dir, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["prepare", "--tokenizer", str(tok_dir), "--out", str(tmp_path / "s"), str(empty)]) == 2
    assert "corpus is empty" in capsys.readouterr().err
    assert main(["prepare", "--tokenizer", str(tok_dir), "--out", str(tmp_path / "s"), str(tmp_path / "nope.txt")]) == 2
    assert "input file not found" in capsys.readouterr().err
