"""Tokenizers for the data / objectives tests: lmforge Tokenizers over the real BERT uncased and
GPT-2 vocabularies, and a word-level one with more than 65,536 ids (uint32 shards)."""
from __future__ import annotations

from pathlib import Path

from lmforge.tokenization.tokenizer import Tokenizer


def bert_tokenizer(refdata: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(refdata / "tokenizers" / "bert-base-uncased")


def gpt2_tokenizer(refdata: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(refdata / "tokenizers" / "gpt2")


def big_vocab_tokenizer(size: int = 70_000) -> Tokenizer:
    """A word-level tokenizer with ``size`` ids: w0 .. w{size-2} and [UNK] = 0."""
    from tokenizers import Tokenizer as Engine
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(size - 1)}}
    backend = Engine(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, family="bert", special_tokens={"unk": "[UNK]"})
