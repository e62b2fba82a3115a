"""Toy GPTs pre-trained on the toy corpus with natural demonstrations (toyland/demos.py), for the lab's zero- /
few-shot experiments: the data, one pre-training run per size (through `lmforge pretrain`'s library function),
and the plot of accuracy against k (the prompts and their scoring: lmforge/prompting/demos.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SIZES = [(1, 32, 2), (2, 64, 2), (4, 128, 4)]  # (layers, width, heads); FFN = 4 x width
FAST_SIZES = [(1, 16, 2), (1, 32, 2)]


def demo_data(out: Path, *, docs: int, examples: int, share: float, kinds: tuple[str, ...], vocab: int) -> Path:
    """Toy tasks + a corpus with ``share`` of its documents demonstrations of ``kinds``; returns the shard dir."""
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland.demos import generate_with_demonstrations
    from lmforge.tokenization.tokenizer import Tokenizer

    generate_with_demonstrations(out / "data", docs=docs, examples=examples, seed=0, share=share, kinds=kinds)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="bpe", vocab_size=vocab, show_progress=False)
    prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=0.02, progress=False, overwrite=True)
    return out / "shards"


def train_gpt(out: Path, shards: Path, size: tuple[int, int, int], *, steps: int, batch: int, seq: int,
              seed: int = 0, val_batches: int = 10, log: Any = None, **train_options: Any) -> dict[str, Any]:
    """Pre-train one toy GPT (clm); returns its directory, non-embedding parameter count and validation loss.
    ``train_options``: more TrainConfig fields (gpt3-scaling keeps one final checkpoint); ``log``: None = quiet."""
    import torch

    from lmforge.config import ModelConfig
    from lmforge.models.model import Model
    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train.config import TrainConfig
    from lmforge.train.logging import read_metrics

    layers, width, heads = size
    model = {"preset": "gpt2", "num_layers": layers, "hidden_size": width, "num_heads": heads,
             "intermediate_size": 4 * width, "max_positions": seq, "hidden_dropout": 0.0, "attention_dropout": 0.0}
    run = out / f"L{layers}-H{width}-seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(model) + "\n")
    train = TrainConfig(max_steps=steps, batch_size=batch, seq_len=seq, lr=2e-3, warmup_ratio=0.05,
                        log_every=max(1, steps // 10), seed=seed, progress=False, **train_options)
    pretrain(PretrainConfig(model=str(run / "model.json"), objective="clm", data=str(shards), out=str(run / "out"),
                            val_batches=val_batches, device="cpu", train=train), log=log or (lambda _: None))
    val = [r for r in read_metrics(run / "out") if r.get("split") == "val"]
    with torch.device("meta"):
        body = Model(ModelConfig.from_preset("gpt2", **{k: v for k, v in model.items() if k != "preset"})).body
    n = sum(p.numel() for name, p in body.named_parameters() if "embed" not in name)
    return {"dir": run / "out", "N": n, "size": f"L{layers} H{width}",
            "val_loss": float(val[-1]["loss"]) if val else float("nan"), "tokens": steps * batch * seq}


def load(directory: Path) -> tuple[Any, Any]:
    from lmforge.recipes.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(directory, device="cpu")
    return model.eval(), tok


def plot_shot_curves(result: Any, path: Path, *, chance_label: str, xlabel: str, ylabel: str, title: str,
                     ylim: tuple[float, float] | None = None, dashed: str | None = None) -> None:
    """Accuracy against k, one line (mean +- std over shot draws) per model size, and the chance level; curves whose
    name ends with ``dashed`` are drawn dashed (a second prompt format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = result.data["shots"]
    fig, ax = plt.subplots(figsize=(6, 4))
    colours: dict[str, str] = {}  # one colour per model: "L4 H128, named" and "L4 H128, neutral" share it
    for size, curve in result.data["curves"].items():
        ys = [curve[str(k)] if str(k) in curve else curve[k] for k in shots]  # JSON turns the keys into strings
        model = size.rsplit(", ", 1)[0] if dashed else size
        colours.setdefault(model, f"C{len(colours)}")
        ax.errorbar(range(len(shots)), [y[0] for y in ys], yerr=[y[1] for y in ys], marker="o", capsize=3,
                    label=size, color=colours[model], ls="--" if dashed and size.endswith(dashed) else "-")
    ax.axhline(result.data["chance"], color="grey", ls="--", label=chance_label)
    ax.set_xticks(range(len(shots)), [str(k) for k in shots])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
