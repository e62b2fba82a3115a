"""Fixtures for the recipe tests: tiny "pre-trained" checkpoints (random bodies with the head
pre-training leaves) with tokenizers trained on the reference samples, for the end-to-end fine-tuning
runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2, max_positions=128,
            hidden_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch) -> None:
    """Fine-tuning caches features beside the data, or in the user cache for read-only data (refdata):
    tests keep theirs in the session's temporary directory (subprocesses inherit the variable)."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))


def _sentences(refdata: Path) -> list[str]:
    rows = (refdata / "glue" / "CoLA" / "train_sample.tsv").read_text().splitlines()
    swag = (refdata / "swag" / "val_sample.csv").read_text().splitlines()
    rte = [json.loads(line)["premise"] for line in (refdata / "glue" / "RTE" / "val.jsonl").read_text().splitlines()]
    return [r.split("\t")[3] for r in rows] + swag + rte


@pytest.fixture(scope="session")
def tiny_encoder(refdata, tmp_path_factory) -> Path:
    """A tiny BERT-style encoder with an MLM head (as pre-training leaves it) and its WordPiece tokenizer."""
    import torch

    from lmforge import Model, ModelConfig, Tokenizer

    torch.manual_seed(0)  # the "pre-trained" body is a fixed random init, whatever ran before
    tok = Tokenizer.train(iter(_sentences(refdata)), kind="wordpiece", vocab_size=800, show_progress=False)
    d = tmp_path_factory.mktemp("tiny-bert")
    Model(ModelConfig.from_preset("bert-tiny", head="mlm", vocab_size=len(tok), **TINY)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_decoder(refdata, tmp_path_factory) -> Path:
    """A tiny GPT-style causal decoder with a CLM head and a byte-level BPE tokenizer."""
    import torch

    from lmforge import Model, ModelConfig, Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.train(iter(_sentences(refdata)), kind="bpe", vocab_size=600, show_progress=False)
    d = tmp_path_factory.mktemp("tiny-gpt")
    config = ModelConfig.from_preset("gpt2", head="clm", vocab_size=len(tok), pad_token_id=None, **TINY)
    Model(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


TINY_GPT_YAML = "preset: gpt-tiny\nnum_layers: 1\nhidden_size: 32\nnum_heads: 2\nintermediate_size: 64\nmax_positions: 64\n"
TINY_BERT_YAML = "preset: bert-tiny\nnum_layers: 1\nhidden_size: 32\nnum_heads: 2\nintermediate_size: 64\nmax_positions: 64\n"


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory) -> dict[str, Path]:
    """Shards of 150 toy-language stories (no reference data needed) made with a WordPiece and a byte-level
    BPE tokenizer of the same size (300 tokens), and tiny model configs: pre-training runs of a second."""
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland.tasks import write_corpus
    from lmforge.tokenization.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("toy-shards")
    corpus = write_corpus(root / "corpus.txt", docs=150, seed=0).path
    out = {"corpus": corpus, "root": root}
    for kind in ("wordpiece", "bpe"):
        tok = Tokenizer.train([str(corpus)], kind=kind, vocab_size=300, show_progress=False)
        assert len(tok) == 300
        tok.save_pretrained(root / f"tok-{kind}")
        out[f"tok-{kind}"] = root / f"tok-{kind}"
        out[kind] = prepare_shards([corpus], tokenizer=tok, out=root / f"shards-{kind}", val_fraction=0.05,
                                   progress=False).out
    for name, text in (("gpt", TINY_GPT_YAML), ("bert", TINY_BERT_YAML)):
        out[name] = root / f"{name}.yaml"
        out[name].write_text(text)
    return out
