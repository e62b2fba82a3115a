"""The exact facts of the real bert-base-uncased and gpt2 vocabularies (refdata README)."""
from __future__ import annotations

SENTENCE = "I want to go home."


def test_bert_uncased_ids_tokens_pair_and_string(bert):
    enc = bert(SENTENCE)
    assert enc["input_ids"] == [101, 1045, 2215, 2000, 2175, 2188, 1012, 102]
    assert enc["token_type_ids"] == [0] * 8 and enc["attention_mask"] == [1] * 8
    tokens = bert.tokenize(SENTENCE)
    assert tokens == ["i", "want", "to", "go", "home", "."]
    assert bert.convert_tokens_to_ids(tokens) == [1045, 2215, 2000, 2175, 2188, 1012]
    assert bert.convert_tokens_to_string(tokens) == "i want to go home."
    pair = bert(SENTENCE, "Me too.")
    ids = pair["input_ids"]
    assert ids[:8] == enc["input_ids"] and ids[-1] == 102 and ids.count(102) == 2
    sep = ids.index(102)
    assert pair["token_type_ids"] == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert bert.decode(ids, skip_special_tokens=True) == "i want to go home. me too."
    assert (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id, bert.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert len(bert) == 30522 and bert.kind == "wordpiece" and bert.lowercase is True


def test_gpt2_ids_tokens_and_added_specials(refdata):
    from lmforge import Tokenizer

    gpt2 = Tokenizer.from_pretrained(refdata / "tokenizers" / "gpt2")  # private copy: this test adds tokens
    assert gpt2(SENTENCE)["input_ids"] == [40, 765, 284, 467, 1363, 13]
    assert "token_type_ids" not in gpt2(SENTENCE)
    assert gpt2.tokenize(SENTENCE) == ["I", "Ġwant", "Ġto", "Ġgo", "Ġhome", "."]
    assert gpt2.get_vocab()["<|endoftext|>"] == 50256 == gpt2.eos_token_id == gpt2.bos_token_id
    assert gpt2.pad_token_id is None and gpt2.kind == "bpe"
    before = len(gpt2)
    added = gpt2.add_special_tokens({"bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]",
                                     "additional_special_tokens": ["[SP1]", "[SP2]"]})
    assert added == 5 and len(gpt2) == before + 5
    assert gpt2.bos_token_id == 50257 and gpt2.pad_token_id == 50259
    assert gpt2.add_special_tokens({"pad_token": "[PAD]"}) == 0  # already there: nothing new
    # added specials are single tokens, never split, and skipped by decode
    ids = gpt2("[BOS] hi [SP2]")["input_ids"]
    assert ids[0] == 50257 and ids[-1] == gpt2.convert_tokens_to_ids("[SP2]")
    assert gpt2.decode(ids, skip_special_tokens=True).strip() == "hi"


def test_bert_cased_vocab_keeps_case_without_a_config(refdata):
    from lmforge import Tokenizer

    cased = Tokenizer.from_pretrained(refdata / "tokenizers" / "bert-base-cased")
    assert cased.lowercase is False and len(cased) == 28996
    assert cased.tokenize("Héllo World")[0] == "H" and "World" in cased.tokenize("Héllo World")
