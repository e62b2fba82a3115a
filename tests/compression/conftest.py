"""Tiny random checkpoints for the compression tests (a GPT with the real GPT-2 vocabulary, a BERT MLM and a
BERT 'fine-tuned' for CoLA with the real bert-base-uncased vocabulary), and one intra-op thread."""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lmforge.models.model import Model

TINY = dict(hidden_size=32, num_heads=4, intermediate_size=48, num_layers=2, max_positions=128,
            hidden_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def noisy(model: Model, seed: int = 1) -> Model:
    """Init leaves biases at 0 and norms at 1: noise makes a wrong row / column visible."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny_gpt(**overrides) -> Model:
    torch.manual_seed(0)
    return noisy(Model.from_preset("gpt-tiny", head="clm", vocab_size=1000, **{**TINY, **overrides}))


def tiny_bert(head: str = "seq-cls", **overrides) -> Model:
    torch.manual_seed(0)
    return noisy(Model.from_preset("bert-tiny", head=head, vocab_size=1000, **{**TINY, **overrides}))


@pytest.fixture(scope="session")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    d = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    noisy(Model.from_preset("gpt-tiny", head="clm", vocab_size=50257, **TINY)).save_pretrained(d)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(refdata / "tokenizers" / "gpt2" / name, d / name)
    return d


@pytest.fixture(scope="session")
def bert_mlm_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    d = tmp_path_factory.mktemp("bert-mlm")
    torch.manual_seed(0)
    noisy(Model.from_preset("bert-tiny", head="mlm", **TINY)).save_pretrained(d)
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", d / "vocab.txt")
    return d


@pytest.fixture(scope="session")
def cola_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """A BERT with a 2-label seq-cls head and the task.json `lmforge finetune` writes for CoLA."""
    from lmforge.recipes.finetune import task_state
    from lmforge.tasks import get_task

    d = tmp_path_factory.mktemp("cola")
    torch.manual_seed(0)
    noisy(Model.from_preset("bert-tiny", head="seq-cls", num_labels=2, **TINY)).save_pretrained(d)
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", d / "vocab.txt")
    (d / "task.json").write_text(json.dumps({**task_state(get_task("glue-cola")), "max_length": 64}))
    return d
