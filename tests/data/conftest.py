"""Fixtures for the data tests: real tokenizers (see tokfixtures.py)."""
from __future__ import annotations

import pytest

import tokfixtures


@pytest.fixture(scope="session")
def bert_tok(refdata):
    return tokfixtures.bert_tokenizer(refdata)


@pytest.fixture(scope="session")
def gpt2_tok(refdata):
    return tokfixtures.gpt2_tokenizer(refdata)
