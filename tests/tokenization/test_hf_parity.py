"""Parity with HF transformers' fast tokenizers built from the same real files (test-only reference).

~2,500 varied lines (Shakespeare, accents, CJK, emoji, control characters, whitespace runs, empty strings):
identical ids, type ids, attention masks, offsets and special-token masks for singles and pairs, with
truncation, padding, tensors, overflowing windows (SQuAD style) and word ids.
"""
from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from lmforge.tokenization.tokenizer import Tokenizer  # noqa: E402

CASES = ["bert-uncased", "bert-cased", "gpt2", "roberta"]


def _build(name: str, refdata):
    d = refdata / "tokenizers"
    if name == "bert-uncased":
        return (Tokenizer.from_pretrained(d / "bert-base-uncased"),
                transformers.BertTokenizerFast.from_pretrained(d / "bert-base-uncased"))
    if name == "bert-cased":
        return (Tokenizer.from_pretrained(d / "bert-base-cased"),
                transformers.BertTokenizerFast.from_pretrained(d / "bert-base-cased", do_lower_case=False))
    if name == "gpt2":
        ours, hf = (Tokenizer.from_pretrained(d / "gpt2"), transformers.GPT2TokenizerFast.from_pretrained(d / "gpt2"))
        ours.pad_token, hf.pad_token = ours.eos_token, hf.eos_token  # GPT-2 has no pad token: the usual fix
        return ours, hf
    # <mask> eats the space before it, as in fairseq's RoBERTa, roberta-base's tokenizer.json and HF 4.x
    # (HF 5 dropped the lstrip when building from vocab.json + merges.txt; we keep the original)
    from tokenizers import AddedToken

    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    return (Tokenizer.from_pretrained(d / "gpt2", family="roberta"),
            transformers.RobertaTokenizerFast.from_pretrained(d / "gpt2", mask_token=mask))


@pytest.fixture(scope="module", params=CASES)
def pair(request, refdata):
    return _build(request.param, refdata)


def _same(ours, theirs) -> None:
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        a, b = ours[key], theirs[key]
        if hasattr(b, "tolist"):
            assert a.shape == b.shape and a.dtype == b.dtype, key
            a, b = a.tolist(), b.tolist()
        assert a == b, f"{key} differs"


def test_special_tokens_and_vocab_match(pair):
    ours, hf = pair
    assert len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert sorted(ours.all_special_ids) == sorted(hf.all_special_ids)


def test_singles_and_pairs_full_outputs(pair, lines):
    ours, hf = pair
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=True)
    _same(ours(lines, **kw), hf(lines, **kw))
    other = lines[1:] + lines[:1]
    _same(ours(lines, other, **kw), hf(lines, other, **kw))
    for text, text_b in zip(lines[:80], other[:80]):  # single (unbatched) calls drop the batch axis
        _same(ours(text, **kw), hf(text, **kw))
        _same(ours(text, text_b, **kw), hf(text, text_b, **kw))
        assert ours.tokenize(text) == hf.tokenize(text)
    assert [ours.tokenize(t) for t in lines] == [hf.tokenize(t) for t in lines]


@pytest.mark.parametrize("padding,truncation,max_length", [
    (True, True, 24), ("longest", "longest_first", 40), ("max_length", True, 32), ("max_length", "only_first", 64),
    (False, True, 16)])
def test_truncation_and_padding(pair, lines, padding, truncation, max_length):
    ours, hf = pair
    first = [t for t in lines if len(t) < 40][:300] if truncation == "only_first" else lines
    second = [t[:30] for t in lines[: len(first)]] if truncation == "only_first" else lines[::-1]
    kw = dict(padding=padding, truncation=truncation, max_length=max_length, return_offsets_mapping=True,
              return_special_tokens_mask=True)
    _same(ours(lines, **kw), hf(lines, **kw))
    _same(ours(first, second, **kw), hf(first, second, **kw))


def test_tensors(pair, lines):
    ours, hf = pair
    kw = dict(padding=True, truncation=True, max_length=48, return_tensors="pt")
    _same(ours(lines[:64], lines[64:128], **kw), hf(lines[:64], lines[64:128], **kw))
    _same(ours(lines[5], **kw), hf(lines[5], **kw))  # one text still gets a (1, L) tensor
    # every field as a tensor (offsets are (B, L, 2); length and the window map are (B,)), torch and numpy
    full = dict(padding="max_length", truncation="only_second", max_length=40, stride=8,
                return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True,
                return_length=True, return_token_type_ids=True)
    questions, contexts = [t[:20] for t in lines[:32]], [" ".join(lines[i:i + 6]) for i in range(32)]
    for kind in ("pt", "np"):
        a, b = ours(questions, contexts, return_tensors=kind, **full), hf(questions, contexts, return_tensors=kind, **full)
        _same(a, b)
        assert a["offset_mapping"].shape[-1] == 2 and a["input_ids"].shape[0] > len(questions)


def test_squad_windows_with_stride(pair, shakespeare):
    ours, hf = pair
    questions = [t for t in shakespeare if 5 < len(t) < 40][:40]
    contexts = [" ".join(shakespeare[i * 30:(i + 1) * 30]) for i in range(40)]
    kw = dict(truncation="only_second", max_length=96, stride=32, return_overflowing_tokens=True,
              return_offsets_mapping=True, padding="max_length", return_special_tokens_mask=True)
    a, b = ours(questions, contexts, **kw), hf(questions, contexts, **kw)
    _same(a, b)
    assert len(a["input_ids"]) > 2 * len(questions)  # really windowed
    for i in range(0, len(a["input_ids"]), 7):
        assert a.sequence_ids(i) == b.sequence_ids(i) and a.word_ids(i) == b.word_ids(i)
    single = dict(truncation=True, max_length=20, stride=5, return_overflowing_tokens=True)
    _same(ours(contexts[0], **single), hf(contexts[0], **single))


def test_word_ids_and_split_words(pair, lines):
    ours, hf = pair
    a, b = ours(lines[:200]), hf(lines[:200])
    assert all(a.word_ids(i) == b.word_ids(i) for i in range(200))
    words = [t.split() for t in lines[:100] if t.split()]
    enc, ref = ours(words, is_split_into_words=True), hf(words, is_split_into_words=True)
    _same(enc, ref)
    assert all(enc.word_ids(i) == ref.word_ids(i) for i in range(len(words)))


def test_decode(pair, lines):
    ours, hf = pair
    batch = ours(lines[:300])["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == \
            hf.batch_decode(batch, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
