"""Training: every kind from text / .gz / .jsonl / an iterator, determinism, HF round trips, bad input."""
from __future__ import annotations

import gzip
import json

import pytest

from lmforge.errors import DataError, TokenizerError
from lmforge.tokenization.tokenizer import Tokenizer

KINDS = [("wordpiece", None), ("bpe", None), ("bpe", "roberta"), ("unigram", None)]
PROBE = ["First Citizen: Before we proceed any further, hear me speak.", "Héllo naïve 日本 😀", "", "  two  spaces "]


def _train(source, kind="wordpiece", family=None, vocab_size=800, **kw) -> Tokenizer:
    return Tokenizer.train(source, kind=kind, family=family, vocab_size=vocab_size, show_progress=False, **kw)


@pytest.mark.parametrize("kind,family", KINDS)
def test_train_each_kind_with_its_family_conventions(corpus, kind, family):
    tok = _train(corpus, kind, family)
    assert len(tok) == 800 and tok.kind == kind
    vocab = tok.get_vocab()
    if kind == "wordpiece":
        assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
        assert any(t.startswith("##") for t in vocab)
        assert tok.tokenize("Héllo") [0].startswith("h")  # uncased by default: lowercase + strip accents
        ids = tok("a b", "c")["input_ids"]
        assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
    elif family == "roberta":
        assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
        ids = tok("a b", "c")["input_ids"]
        assert ids[0] == 0 and ids.count(2) == 3  # <s> A </s></s> B </s>
    elif kind == "bpe":
        assert vocab["<|endoftext|>"] == 0 and "Ġthe" in vocab
        assert tok.unk_token_id == 0
        # byte-level: nothing is unknown, every text decodes back exactly
        for text in PROBE:
            assert tok.decode(tok(text)["input_ids"]) == text
    else:
        assert [vocab[t] for t in ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
        assert any(t.startswith("▁") for t in vocab)
        assert tok.tokenize("the king")[0].startswith("▁")


@pytest.mark.parametrize("kind,family", KINDS)
def test_deterministic(corpus, kind, family):
    assert _train(corpus, kind, family).backend.to_str() == _train(corpus, kind, family).backend.to_str()


def test_gz_jsonl_and_iterator_give_the_same_vocabulary(tmp_path, corpus):
    lines = corpus.read_text(encoding="utf-8").splitlines()
    gz = tmp_path / "c.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(lines)), encoding="utf-8")
    ref = _train(corpus).get_vocab()
    assert _train(gz).get_vocab() == ref
    assert _train([jsonl], text_field="body").get_vocab() == ref
    assert _train(iter(lines)).get_vocab() == ref
    assert _train(t for t in lines).training_report["lines"] == sum(1 for t in lines if t.strip())


@pytest.mark.parametrize("kind,family", KINDS)
def test_save_then_hf_autotokenizer_gives_the_same_ids(tmp_path, corpus, lines, kind, family):
    transformers = pytest.importorskip("transformers")
    tok = _train(corpus, kind, family)
    tok.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    written = {p.name for p in tok.save_pretrained(tmp_path / "tok")}
    classic = {"wordpiece": {"vocab.txt"}, "bpe": {"vocab.json", "merges.txt"}, "unigram": set()}[kind]
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} | classic == written
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    sample = lines[:400] + ["with <extra> inside"]
    ours, theirs = tok(sample, sample[::-1]), hf(sample, sample[::-1])
    assert ours["input_ids"] == theirs["input_ids"] and ours["attention_mask"] == theirs["attention_mask"]
    assert len(hf) == len(tok)
    back = Tokenizer.from_pretrained(tmp_path / "tok")
    assert back.backend.to_str() == tok.backend.to_str() and back.family == tok.family
    assert back(sample) == tok(sample) and back.additional_special_tokens == ["<extra>"]


def test_cased_training_keeps_case(corpus):
    tok = _train(corpus, lowercase=False)
    assert tok.lowercase is False and "First" in tok.tokenize("First Citizen")


# ------------------------------------------------------------------ bad input

def test_non_utf8_bytes_fail_or_with_replace_are_replaced_and_counted(tmp_path, corpus):
    bad = tmp_path / "bad.txt"
    head = corpus.read_bytes()[:20000]
    bad.write_bytes(head + b"\nbroken \xff\xfe bytes \xc3\n")
    line = head.count(b"\n") + 2  # the head's lines, then the "\n" added before "broken"
    with pytest.raises(DataError, match=rf"bad.txt:{line}: not UTF-8 text: byte 0xff at byte offset {len(head) + 8} "):
        _train(bad)
    seen: list[str] = []
    tok = _train(bad, log=seen.append, encoding_errors="replace")
    assert tok.training_report["replaced_bytes"] == {str(bad): 3}
    assert seen == [f"warning: {bad}: replaced 3 invalid UTF-8 byte(s) with U+FFFD"]


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty corpus.*empty.txt"):
        _train(empty)
    with pytest.raises(DataError, match="empty corpus"):
        _train(iter([]), "bpe", vocab_size=300)


def test_missing_file_and_text_list(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.txt"):
        _train(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="iter\\(texts\\)"):
        _train(["the quick brown fox", "jumps"])


@pytest.mark.parametrize("kind,size,match", [
    ("wordpiece", 30, "smaller than the corpus alphabet"), ("bpe", 200, "256-byte alphabet"),
    ("unigram", 20, "smaller than the corpus alphabet"), ("unigram", 3, "5 special tokens")])
def test_vocab_size_too_small(corpus, kind, size, match):
    with pytest.raises(TokenizerError, match=match):
        _train(corpus, kind, vocab_size=size)


def test_unknown_kind_family_and_options(corpus):
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'wordpeice'.*Did you mean: wordpiece"):
        _train(corpus, "wordpeice")
    with pytest.raises(TokenizerError, match="unigram"):
        _train(corpus, "sentencepiece")
    with pytest.raises(TokenizerError, match="for wordpiece use bert"):
        _train(corpus, "wordpiece", family="gpt2")
    with pytest.raises(TokenizerError, match="keeps case"):
        _train(corpus, "bpe", vocab_size=300, lowercase=True)


def test_jsonl_without_the_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="d.jsonl:2: no string field 'text'"):
        _train(path)


# ------------------------------------------------------------------ streaming and progress

def test_an_iterator_is_streamed_batch_by_batch():
    from lmforge.tokenization.train import BATCH, Corpus

    pulled = [0]

    def texts():
        for i in range(10 * BATCH):
            pulled[0] += 1
            yield f"line {i}"

    batches = Corpus(texts()).batches()
    assert len(next(batches)) == BATCH and pulled[0] == BATCH  # nothing read ahead of the trainer
    next(batches)
    assert pulled[0] == 2 * BATCH


def test_jsonl_gz_is_read(tmp_path, corpus):
    lines = corpus.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in lines)
    assert _train(path, "bpe", vocab_size=400).get_vocab() == _train(corpus, "bpe", vocab_size=400).get_vocab()


class _TrainerSpy:
    """Stands in for `tokenizers.trainers`, recording the show_progress each engine trainer gets."""

    def __init__(self, real):
        self.real, self.show_progress = real, []

    def __getattr__(self, name):
        cls = getattr(self.real, name)

        def build(**kw):
            self.show_progress.append(kw.get("show_progress"))
            return cls(**kw)
        return build


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
@pytest.mark.parametrize("show", [True, False])
def test_show_progress_reaches_the_engine_trainer(monkeypatch, corpus, kind, show):
    from lmforge.tokenization import train as train_mod

    spy = _TrainerSpy(train_mod.trainers)
    monkeypatch.setattr(train_mod, "trainers", spy)
    Tokenizer.train(corpus, kind=kind, vocab_size=400 if kind == "bpe" else 300, show_progress=show)
    assert spy.show_progress and set(spy.show_progress) == {show}
