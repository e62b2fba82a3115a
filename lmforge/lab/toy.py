"""Toy-language data for the lab's training experiments: corpus (+ tasks), a tokenizer and shards."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def toy_shards(out: Path, *, docs: int, examples: int = 10, kind: str = "wordpiece", vocab: int = 1000,
               val_fraction: float = 0.05) -> tuple[Any, Path]:
    """(tokenizer, shard dir) of ``docs`` toy stories written under ``out`` (tasks in out/data too)."""
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.tokenization.tokenizer import Tokenizer

    generate(out / "data", docs=docs, examples=examples, seed=0)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind=kind, vocab_size=vocab, show_progress=False)
    prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=val_fraction, progress=False,
                   overwrite=True)
    return tok, out / "shards"
