"""`lmforge tokenizer train` and `lmforge tokenize` end to end (in-process, on tiny data)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from lmforge.cli import main

REPO = Path(__file__).resolve().parents[2]


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


def test_cli_progress_only_on_a_terminal_and_unless_no_progress(monkeypatch, tmp_path, corpus, capsys):
    from lmforge.commands import common
    from lmforge.tokenization import train as train_mod

    seen: list = []
    real = train_mod.trainers.BpeTrainer
    monkeypatch.setattr(train_mod.trainers, "BpeTrainer", lambda **kw: seen.append(kw["show_progress"]) or real(**kw))
    for terminal, flags, want in ((True, [], True), (True, ["--no-progress"], False), (False, [], False)):
        monkeypatch.setattr(common, "interactive", lambda: terminal)
        assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out",
                     str(tmp_path / f"t-{terminal}-{len(flags)}"), *flags, str(corpus)]) == 0
        assert seen.pop() is want


def test_unigram_from_jsonl_gz_with_text_field(tmp_path, corpus, capsys):
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


def _lmforge(*argv: str) -> subprocess.CompletedProcess:
    """The real command in a child process, its stdout and stderr pipes (not terminals)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lmforge", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_no_blank_lines_when_the_output_is_a_pipe(tmp_path, corpus):
    # the tokenizers engine's progress bar printed one blank line per phase into a pipe
    done = _lmforge("tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "300", "--out", str(tmp_path / "t"),
                    str(corpus))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("trained a wordpiece tokenizer")
    assert "" not in done.stdout.splitlines() and "\r" not in done.stdout + done.stderr, (done.stdout, done.stderr)


def test_smaller_vocabulary_than_asked_is_said(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\nthe cat sat on the mat\n")
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "500", "--out", str(tmp_path / "t"),
                 str(tiny)]) == 0
    got = capsys.readouterr()
    n = json.loads((tmp_path / "t" / "tokenizer.json").read_text())["model"]["vocab"]
    assert f"warning: the vocabulary has {len(n)} tokens, not the 500 asked: 2 line(s) of text are too few" in got.err
    assert "lower the minimum frequency (--min-frequency)" in got.err  # min frequency 2 is part of the reason
    assert f"{len(n)} tokens, not the --vocab-size 500 asked" in got.out
    assert main(["tokenizer", "train", "--kind", "unigram", "--vocab-size", "500", "--out", str(tmp_path / "u"),
                 "--min-frequency", "1", str(tiny)]) == 0
    assert "not the 500 asked" in capsys.readouterr().err
    # a vocabulary of the asked size says nothing
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", str(len(n)), "--out",
                 str(tmp_path / "v"), str(tiny)]) == 0
    assert "asked" not in "".join(capsys.readouterr())


def test_non_utf8_one_rule_for_tokenizer_train_and_prepare(tmp_path, corpus, capsys):
    """Both refuse a latin-1 byte naming file:line and the byte offset, and both read it as U+FFFD with
    --encoding-errors replace (with a warning that counts the bytes)."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"first line\nun caf\xe9 au lait\n")
    want = (f"{bad}:2: not UTF-8 text: byte 0xe9 at byte offset 17 (invalid continuation byte); convert the file "
            "to UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT), or read invalid bytes as U+FFFD with "
            "--encoding-errors replace")
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "100", "--out", str(tmp_path / "t"),
                 str(bad)]) == 2
    assert capsys.readouterr().err == f"lmforge tokenizer: error: {want}\n"
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "100", "--out", str(tmp_path / "t"),
                 "--min-frequency", "1", "--encoding-errors", "replace", str(bad), str(corpus)]) == 0
    assert f"warning: {bad}: replaced 1 invalid UTF-8 byte(s) with U+FFFD" in capsys.readouterr().err
    args = ["prepare", "--tokenizer", str(tmp_path / "t"), "--out", str(tmp_path / "s"), "--no-progress", str(bad)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"lmforge prepare: error: {want}\n"
    assert not (tmp_path / "s").exists()
    assert main([*args, "--encoding-errors", "replace"]) == 0
    assert f"warning: {bad}: replaced 1 invalid UTF-8 byte(s) with U+FFFD" in capsys.readouterr().out
    from lmforge.data.shards import ShardDataset

    meta = ShardDataset(tmp_path / "s", "train").meta
    assert meta["replaced_bytes"] == {str(bad): 1} and meta["settings"]["encoding_errors"] == "replace"


def test_python_train_says_the_python_fix(tmp_path):
    import pytest

    from lmforge import Tokenizer
    from lmforge.errors import DataError

    bad = tmp_path / "x.txt.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"ok\nbroken \xff here\n")
    with pytest.raises(DataError, match=r"x.txt.gz:2: not UTF-8 text: byte 0xff at byte offset 10 of the "
                                        r"decompressed text .* with encoding_errors='replace'") as err:
        Tokenizer.train(bad, kind="bpe", vocab_size=300, show_progress=False)
    assert err.value.cli.endswith("with --encoding-errors replace")
    tok = Tokenizer.train(bad, kind="bpe", vocab_size=300, show_progress=False, encoding_errors="replace")
    assert tok.training_report["replaced_bytes"] == {str(bad): 1}
    # a list of paths that do not exist: the Python hint (iter(texts)) in Python, the paths on the CLI
    with pytest.raises(DataError, match=r"iter\(texts\)") as err:
        Tokenizer.train(["the cat sat"], kind="bpe", vocab_size=300, show_progress=False)
    assert err.value.cli == "training file(s) not found: the cat sat; check the paths"
