"""Fixtures for the objective tests: tiny-shakespeare shards made with the real tokenizers."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.data.shards import ShardDataset, prepare_shards


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
