"""The HF-style API beyond parity: loading errors, special tokens, decode, tensors, model/tokenizer checks."""
from __future__ import annotations

import shutil

import pytest
import torch

from lmforge.errors import InputError, TokenizerError
from lmforge.tokenization.tokenizer import Tokenizer, check_model_vocab


def test_missing_files_are_named(tmp_path, refdata):
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TokenizerError, match="no tokenizer files in .*expected tokenizer.json, vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    only_vocab = tmp_path / "bpe"
    only_vocab.mkdir()
    shutil.copy(refdata / "tokenizers/gpt2/vocab.json", only_vocab)
    with pytest.raises(TokenizerError, match="missing merges.txt"):
        Tokenizer.from_pretrained(only_vocab)
    with pytest.raises(TokenizerError, match="missing vocabulary file .*vocab.txt"):
        Tokenizer.from_pretrained(only_vocab, family="bert")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json cannot be read"):
        Tokenizer.from_pretrained(bad)
    with pytest.raises(TokenizerError, match="unknown tokenizer family 'robreta'.*Did you mean: roberta"):
        Tokenizer.from_pretrained(refdata / "tokenizers/gpt2", family="robreta")


def test_impossible_truncation_and_bad_arguments(bert):
    long_q = "why " * 40
    with pytest.raises(TokenizerError, match="only_second.*raise max_length"):
        bert(long_q, "short context", truncation="only_second", max_length=16)
    with pytest.raises(TokenizerError, match="only_second"):
        bert(long_q, truncation="only_second", max_length=16)  # no second text to cut
    with pytest.raises(TokenizerError, match="max_length=3 leaves no room for text: a pair takes 3 special tokens"):
        bert("a", "b", truncation=True, max_length=3)
    with pytest.raises(InputError, match="padding='maxlength'.*Did you mean: max_length"):
        bert("a", padding="maxlength")
    with pytest.raises(InputError, match="different lengths; pass padding=True"):
        bert(["a", "a b c"], return_tensors="pt")
    with pytest.raises(InputError, match="3 texts but 2 text_pair"):
        bert(["a", "b", "c"], ["x", "y"])
    with pytest.raises(InputError, match="needs max_length"):
        bert("a", padding="max_length")
    with pytest.raises(InputError, match="return_tensors='tf'; use 'pt', 'np' or None"):
        bert(["a", "b"], return_tensors="tf")


def test_gpt2_padding_needs_a_pad_token(refdata):
    gpt2 = Tokenizer.from_pretrained(refdata / "tokenizers/gpt2")
    with pytest.raises(TokenizerError, match="no pad token.*pad_token = tok.eos_token"):
        gpt2(["a", "b c"], padding=True)
    gpt2.pad_token = gpt2.eos_token
    out = gpt2(["a", "b c"], padding=True, return_tensors="pt")
    assert out["input_ids"].tolist() == [[64, 50256], [65, 269]] and out.attention_mask.tolist() == [[1, 0], [1, 1]]


def test_calls_leave_the_backend_unconfigured(bert):
    bert(["a b", "c"], ["d", "e f g"], padding="max_length", truncation=True, max_length=8)
    assert bert.backend.truncation is None and bert.backend.padding is None
    assert len(bert.backend.encode("a " * 600).ids) == 602  # raw engine users see no leftover truncation


def test_tensors_offsets_word_ids_and_windows(bert):
    enc = bert(["Hello world", "Tokenizers are great"], padding=True, return_tensors="pt",
               return_offsets_mapping=True, return_special_tokens_mask=True)
    assert enc["input_ids"].dtype == torch.long and enc["input_ids"].shape == enc["offset_mapping"].shape[:2]
    assert enc["special_tokens_mask"][0].tolist() == [1, 0, 0, 1, 1, 1, 1]  # padding counts as special
    assert enc.word_ids(1) == [None, 0, 0, 0, 1, 2, None]  # "token ##izer ##s" are one word
    assert enc.tokens(0) == ["[CLS]", "hello", "world", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]
    windows = bert("question?", "one two three four five six seven eight nine ten", truncation="only_second",
                   max_length=10, stride=2, return_overflowing_tokens=True)
    assert windows["overflow_to_sample_mapping"] == [0] * len(windows["input_ids"]) and len(windows["input_ids"]) > 1
    # consecutive windows share `stride` context tokens
    first, second = windows["input_ids"][0], windows["input_ids"][1]
    assert first[-3:-1] == second[4:6]


def test_decode_convert_and_add_tokens(refdata):
    tok = Tokenizer.from_pretrained(refdata / "tokenizers/bert-base-uncased")
    ids = tok("Hello there!")["input_ids"]
    assert tok.decode(ids) == "[CLS] hello there! [SEP]"
    assert tok.decode(torch.tensor(ids), skip_special_tokens=True) == "hello there!"
    assert tok.batch_decode(torch.tensor([ids, ids]), skip_special_tokens=True) == ["hello there!"] * 2
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "there", "!", "[SEP]"]
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == ["hello", "there", "!"]
    assert tok.convert_ids_to_tokens(7592) == "hello"
    assert tok.convert_tokens_to_ids("notaword") == tok.unk_token_id == 100
    n = len(tok)
    assert tok.add_tokens(["lmforge", "hello"]) == 1 and len(tok) == n + 1  # "hello" is already there
    assert tok.tokenize("LMForge rocks") == ["lmforge", "rocks"]
    assert tok.add_tokens(["<ent>"], special_tokens=True) == 1 and "<ent>" in tok.all_special_tokens
    assert tok.decode(tok("a <ent> b")["input_ids"], skip_special_tokens=True) == "a b"
    with pytest.raises(TokenizerError, match="unknown special token key 'padd_token'.*pad_token"):
        tok.add_special_tokens({"padd_token": "x"})


def test_changing_cls_sep_updates_the_template(refdata):
    tok = Tokenizer.from_pretrained(refdata / "tokenizers/bert-base-uncased")
    tok.add_special_tokens({"cls_token": "<cls>", "sep_token": "<sep>"})
    ids = tok("hi", "yo")["input_ids"]
    assert ids[0] == tok.cls_token_id == 30522 and ids.count(tok.sep_token_id) == 2


def test_check_model_vocab(bert):
    check_model_vocab(30522, bert)
    check_model_vocab(30528, bert)  # padded embeddings are fine
    with pytest.raises(TokenizerError, match=r"30522 tokens.*30000 rows.*resize_token_embeddings\(30522\)"):
        check_model_vocab(30000, bert)


def test_save_pretrained_writes_hf_files_and_reloads(tmp_path, refdata):
    tok = Tokenizer.from_pretrained(refdata / "tokenizers/bert-base-uncased")
    tok.model_max_length = 512
    names = {p.name for p in tok.save_pretrained(tmp_path)}
    assert names == {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == \
        (refdata / "tokenizers/bert-base-uncased/vocab.txt").read_text(encoding="utf-8")
    back = Tokenizer.from_pretrained(tmp_path)
    assert back.model_max_length == 512 and back.lowercase is True
    assert len(back("word " * 600, truncation=True)["input_ids"]) == 512  # truncation=True uses model_max_length
    # a checkpoint directory with the tokenizer in a tokenizer/ subfolder (shard directories) also loads
    nested = tmp_path / "run"
    tok.save_pretrained(nested / "tokenizer")
    assert Tokenizer.from_pretrained(nested).get_vocab() == tok.get_vocab()


def test_hf_tokenizer_json_is_used_as_is(tmp_path, refdata):
    transformers = pytest.importorskip("transformers")
    hf = transformers.RobertaTokenizerFast.from_pretrained(refdata / "tokenizers/gpt2")
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.family == "roberta" and tok.cls_token_id == hf.cls_token_id
    text = ["Hello world, again!", "Two texts"]
    assert tok(text, text[::-1])["input_ids"] == hf(text, text[::-1])["input_ids"]
