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


def finetune_toy(model: Path, data: Path, run: Path, *, task: str, seed: int, epochs: float, lr: float,
                 scratch: bool = False) -> dict[str, float]:
    """Fine-tune ``model`` (a pre-training's output directory) on the toy task ``task`` (``data``: its split files)
    into ``run``: the best epoch's dev scores as ``dev_*`` and that model's test scores as ``test_*``. The weights
    are deleted afterwards (the lab keeps only the scores)."""
    import shutil

    from lmforge.recipes.finetune import FinetuneConfig, evaluate_dir, finetune

    shutil.rmtree(run, ignore_errors=True)
    quiet = lambda m: None  # noqa: E731
    dev = finetune(FinetuneConfig(model=str(model), task=task, data=str(data), out=str(run), from_scratch=scratch,
                                  epochs=epochs, lr=lr, batch_size=16, max_length=64, seed=seed, device="cpu",
                                  progress=False), log=quiet)
    test = evaluate_dir(str(run), task=None, data=str(data), split="test", out=str(run / "test"), device="cpu",
                        log=quiet)
    for item in run.rglob("*.safetensors"):
        item.unlink()
    return {**{f"dev_{k}": float(v) for k, v in dev.items() if isinstance(v, (int, float))},
            **{f"test_{k}": float(v) for k, v in test.items() if isinstance(v, (int, float))}}


def mlm_validation(model_dir: Path, shards: Path, *, batches: int, seq_len: int = 64) -> dict[str, float]:
    """Validation MLM loss and accuracy of ``model_dir`` on the first ``batches`` batches of 32 of the shards' val
    split, with mlm's dynamic masks read at epoch 0 and seed 0: the same masked tokens for every model scored."""
    import torch

    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.loop import objective_evaluator

    model, tok = load_model_and_tokenizer(model_dir)
    model.eval()
    objective = build_objective("mlm", tokenizer=tok, seq_len=seq_len)
    source = BatchSource(objective, ShardDataset(shards, "val"), batch_size=32, seed=0, shuffle=False,
                         drop_last=False)
    with torch.no_grad():
        r = objective_evaluator(objective, source, max_batches=batches)(model)
    return {"loss": float(r["loss"]), "accuracy": float(r["mlm_accuracy"])}
