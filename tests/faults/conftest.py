"""Fixtures of the fault tests: valid shards, tokenizer and model dir for the cases to damage."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> dict[str, Path]:
    """Valid shards of a small toy corpus, their tokenizer and a tiny BERT model directory."""
    import torch

    from lmforge import Model, ModelConfig
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland.tasks import write_corpus
    from lmforge.tokenization.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("fuzz")
    corpus = write_corpus(root / "corpus.txt", docs=60, seed=0).path
    tok = Tokenizer.train([str(corpus)], kind="wordpiece", vocab_size=200, show_progress=False)
    tok.save_pretrained(root / "tok")
    shards = prepare_shards([corpus], tokenizer=tok, out=root / "shards", val_fraction=0.05, progress=False).out
    torch.manual_seed(0)
    model = root / "model"
    Model(ModelConfig.from_preset("bert-tiny", head="mlm", vocab_size=len(tok), hidden_size=32, num_heads=2,
                                  intermediate_size=64, num_layers=1, max_positions=64)).save_pretrained(model)
    tok.save_pretrained(model)
    return {"root": root, "tok": root / "tok", "shards": Path(shards), "model": model}
