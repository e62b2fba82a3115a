"""Tiny random checkpoints with the real GPT-2 / BERT vocabularies, and one intra-op thread (few-shot scoring
and decoding run many tiny ops, where thread hand-offs on a shared 2-core machine cost more than the math)."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

Model = pytest.importorskip("lmforge.models.model").Model


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """gpt-tiny (L2/H128) with a clm head over the real GPT-2 vocabulary, 64 positions."""
    d = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    Model.from_preset("gpt-tiny", head="clm", vocab_size=50257, max_positions=64).save_pretrained(d)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(refdata / "tokenizers" / "gpt2" / name, d / name)
    return d


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """bert-tiny with an mlm head over the real bert-base-uncased vocabulary."""
    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    Model.from_preset("bert-tiny", head="mlm").save_pretrained(d)
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", d / "vocab.txt")
    return d
