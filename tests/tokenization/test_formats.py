"""Every file format `Tokenizer.from_pretrained` reads, and the classic files `save_pretrained` writes, checked
against HF transformers' own tokenizer classes (test-only reference).

- A trained tokenizer's classic files alone (vocab.txt, or vocab.json + merges.txt; no tokenizer.json) loaded
  by HF's BERT / GPT-2 / RoBERTa classes, which build their own pipeline from them, give the same ids on
  the hard lines: proof that lmforge trains with each family's conventions (lowercase + accents, CJK,
  punctuation and control characters for BERT; byte level for GPT-2 / RoBERTa).
- An HF-saved tokenizer.json of each family is read as HF reads it.
- BERT vocab.txt with tokenizer_config.json's do_lower_case, both ways.
"""
from __future__ import annotations

import json
import shutil

import pytest

from lmforge.tokenization.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

KW = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=True)


def _same(ours, theirs) -> None:
    for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping", "special_tokens_mask"):
        assert ours[key] == theirs[key], key


def _classic_only(tok: Tokenizer, directory):
    """Save ``tok``, then keep only the classic files and tokenizer_config.json (HF rebuilds the pipeline)."""
    tok.save_pretrained(directory)
    (directory / "tokenizer.json").unlink()
    return directory


@pytest.mark.parametrize("kind,family,lowercase", [
    ("wordpiece", "bert", True), ("wordpiece", "bert", False), ("bpe", "gpt2", None), ("bpe", "roberta", None)])
def test_trained_classic_files_match_hf_built_pipeline(tmp_path, lines, kind, family, lowercase):
    # trained on the varied lines themselves, so accents, CJK and emoji are in the vocabulary
    tok = Tokenizer.train(iter(lines), kind=kind, family=family, vocab_size=1500, lowercase=lowercase,
                          show_progress=False)
    directory = _classic_only(tok, tmp_path / "tok")
    assert {p.name for p in directory.iterdir()} - {"tokenizer_config.json", "special_tokens_map.json"} == \
        ({"vocab.txt"} if kind == "wordpiece" else {"vocab.json", "merges.txt"})
    if family == "bert":
        hf = transformers.BertTokenizerFast.from_pretrained(directory)
    elif family == "gpt2":
        hf = transformers.GPT2TokenizerFast.from_pretrained(directory)
        tok.pad_token, hf.pad_token = tok.eos_token, hf.eos_token
    else:  # <mask> eats the space before it, as in the original RoBERTa (HF 5 drops this from classic files)
        from tokenizers import AddedToken

        mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
        hf = transformers.RobertaTokenizerFast.from_pretrained(directory, mask_token=mask)
    assert hf.get_vocab() == tok.get_vocab()
    lines = lines[:1200]  # ~130 of them hard cases
    other = lines[1:] + lines[:1]
    _same(tok(lines, **KW), hf(lines, **KW))
    _same(tok(lines, other, **KW), hf(lines, other, **KW))
    pad = dict(padding="max_length", truncation=True, max_length=24, **KW)
    _same(tok(lines[:300], other[:300], **pad), hf(lines[:300], other[:300], **pad))
    if kind == "wordpiece":  # the basic tokenization really ran: accents, CJK split, control characters
        words = tok.tokenize("Héllo 日本 a\x00b")
        assert ("hello" in "".join(words).replace("##", "")) == bool(lowercase) and "日" in words and "本" in words


@pytest.mark.parametrize("name", ["bert-base-uncased", "bert-base-cased", "gpt2", "roberta"])
def test_hf_saved_tokenizer_json_is_read_as_hf_reads_it(tmp_path, refdata, lines, name):
    d = refdata / "tokenizers"
    hf = {"bert-base-uncased": lambda: transformers.BertTokenizerFast.from_pretrained(d / name),
          "bert-base-cased": lambda: transformers.BertTokenizerFast.from_pretrained(d / name, do_lower_case=False),
          "gpt2": lambda: transformers.GPT2TokenizerFast.from_pretrained(d / "gpt2"),
          "roberta": lambda: transformers.RobertaTokenizerFast.from_pretrained(d / "gpt2")}[name]()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.family == {"gpt2": "gpt2", "roberta": "roberta"}.get(name, "bert")
    assert len(tok) == len(hf) and sorted(tok.all_special_ids) == sorted(hf.all_special_ids)
    assert {n: getattr(tok, f"{n}_token_id") for n in ("cls", "sep", "pad", "mask", "unk")} == \
        {n: getattr(hf, f"{n}_token_id") for n in ("cls", "sep", "pad", "mask", "unk")}
    other = lines[::-1]
    _same(tok(lines, other, **KW), hf(lines, other, **KW))


@pytest.mark.parametrize("vocab,do_lower_case", [("bert-base-uncased", False), ("bert-base-cased", True)])
def test_vocab_txt_reads_do_lower_case_from_tokenizer_config(tmp_path, refdata, lines, vocab, do_lower_case):
    # the opposite of what the vocabulary alone suggests, so the config must win
    shutil.copy(refdata / "tokenizers" / vocab / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": do_lower_case}), encoding="utf-8")
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.lowercase is do_lower_case
    hf = transformers.BertTokenizerFast.from_pretrained(refdata / "tokenizers" / vocab, do_lower_case=do_lower_case)
    _same(tok(lines, **KW), hf(lines, **KW))
    assert (tok.tokenize("Hello")[0] == "hello") is do_lower_case


@pytest.mark.parametrize("lowercase", [True, False])
def test_trained_unigram_matches_hf_albert_built_from_its_pieces(lines, lowercase):
    """HF's AlbertTokenizer builds ALBERT's own pipeline (quote replacement, NFKD + accent stripping +
    lowercase when uncased, ▁ Metaspace) around a list of (piece, score): same ids as lmforge's."""
    tok = Tokenizer.train(iter(lines), kind="unigram", vocab_size=1500, lowercase=lowercase, show_progress=False)
    pieces = [(p, s) for p, s in json.loads(tok.backend.to_str())["model"]["vocab"]]
    hf = transformers.AlbertTokenizer(vocab=pieces, do_lower_case=lowercase, keep_accents=not lowercase)
    assert hf.get_vocab() == tok.get_vocab()
    sample = lines[:1200] + ["``quoted'' text", "Ünïcödé ÀÉÎ", "a   b\tc"]
    other = sample[::-1]
    _same(tok(sample, other, **KW), hf(sample, other, **KW))
    assert tok.tokenize("The KING") == hf.tokenize("The KING")
