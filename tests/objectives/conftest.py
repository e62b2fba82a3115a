"""Fixtures for the objective tests: real tokenizers and tiny-shakespeare shards made with them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import tokfixtures  # noqa: E402

from lmforge.data.shards import ShardDataset, prepare_shards  # noqa: E402


@pytest.fixture(scope="session")
def bert_tok(refdata):
    return tokfixtures.bert_tokenizer(refdata)


@pytest.fixture(scope="session")
def gpt2_tok(refdata):
    return tokfixtures.gpt2_tokenizer(refdata)


@pytest.fixture(scope="session")
def bert_shards(refdata, bert_tok, tmp_path_factory) -> Path:
    """All of tiny-shakespeare, one document per speech (blank-line separated), BERT uncased."""
    out = tmp_path_factory.mktemp("shards") / "bert"
    prepare_shards([refdata / "text" / "tinyshakespeare.txt"], tokenizer=bert_tok, out=out,
                   doc_mode="blank", val_fraction=0.01, progress=False)
    return out


@pytest.fixture(scope="session")
def bert_train(bert_shards) -> ShardDataset:
    return ShardDataset(bert_shards, "train")
