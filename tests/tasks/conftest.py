"""Fixtures for the task tests: the real BERT uncased / GPT-2 tokenizers (via tests/data/tokfixtures)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import tokfixtures  # noqa: E402


@pytest.fixture(scope="session")
def bert_tok(refdata):
    return tokfixtures.bert_tokenizer(refdata)


@pytest.fixture(scope="session")
def gpt2_tok(refdata):
    return tokfixtures.gpt2_tokenizer(refdata)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads per tiny op only fight each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
