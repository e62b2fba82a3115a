"""gpt3-scaling: GPT-3's table 2.1 from the presets, and a toy scaling curve.

Part 1 builds every gpt3-* preset on the meta device and sets its size beside Brown et al. 2020 table 2.1.
Part 2 pre-trains 5 GPT-2-bodied models of growing width / depth on the toy corpus for the SAME number of
tokens (through `lmforge pretrain`'s library function), and fits validation loss = a * N^-alpha over the
non-embedding parameter count N (Kaplan et al. 2020's L(N), GPT-3 figure 3.1's shape). Each point's training
compute is stated as C = 6 N D (Kaplan's approximation, D = tokens seen).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmforge.lab.registry import Check, Log, Result

# Brown et al. 2020, table 2.1: n_params, n_layers, d_model, n_heads
TABLE_2_1 = {"gpt3-small": (125e6, 12, 768, 12), "gpt3-medium": (350e6, 24, 1024, 16),
             "gpt3-large": (760e6, 24, 1536, 16), "gpt3-xl": (1.3e9, 24, 2048, 24), "gpt3-2.7b": (2.7e9, 32, 2560, 32),
             "gpt3-6.7b": (6.7e9, 32, 4096, 32), "gpt3-13b": (13e9, 40, 5140, 40), "gpt3-175b": (175e9, 96, 12288, 96)}
KAPLAN_ALPHA_N = 0.076  # Kaplan et al. 2020, eq. 1.1 (WebText2, converged in D)
# (layers, width, heads) of the toy models; FFN = 4 x width
SIZES = [(1, 32, 2), (2, 48, 2), (2, 64, 2), (3, 96, 3), (4, 128, 4)]
FAST_SIZES = [(1, 16, 2), (1, 32, 2)]


def table_2_1() -> tuple[list[dict[str, Any]], list[Check]]:
    import torch

    from lmforge.config import ModelConfig
    from lmforge.models.model import Model

    rows, checks = [], []
    for name, (paper, layers, width, heads) in TABLE_2_1.items():
        c = ModelConfig.from_preset(name)
        with torch.device("meta"):
            n = sum(p.numel() for p in Model(c).body.parameters())
        rel = n / paper - 1
        rows.append({"model": name, "params": n, "paper": f"{paper:.3g}", "layers": c.num_layers,
                     "d_model": c.hidden_size, "heads": c.num_heads, "paper shape": f"{layers} / {width} / {heads}"})
        checks.append(Check(f"{name} parameters (table 2.1)", f"{paper / 1e6:,.0f}M", f"{n / 1e6:,.1f}M ({rel:+.1%})",
                            abs(rel) < 0.03,
                            note="" if (c.num_layers, c.hidden_size, c.num_heads) == (layers, width, heads) else
                            f"shape {c.num_layers} / {c.hidden_size} / {c.num_heads}: the paper's cannot be built"))
    return rows, checks


def _data(out: Path, fast: bool) -> Path:
    from lmforge.data.shards import prepare_shards
    from lmforge.data.toyland import generate
    from lmforge.tokenization.tokenizer import Tokenizer

    generate(out / "data", docs=300 if fast else 12000, examples=10, seed=0)
    corpus = out / "data" / "corpus" / "train.txt"
    tok = Tokenizer.train([str(corpus)], kind="bpe", vocab_size=400 if fast else 800, show_progress=False)
    tok.save_pretrained(out / "tokenizer")
    prepare_shards([corpus], tokenizer=tok, out=out / "shards", val_fraction=0.05, progress=False, overwrite=True)
    return out / "shards"


def train_one(out: Path, shards: Path, size: tuple[int, int, int], *, steps: int, batch: int, seq: int,
              seed: int) -> dict[str, Any]:
    """Pre-train one toy GPT with clm; (N non-embedding, validation loss, tokens, 6 N D flops)."""
    from lmforge.lab.toy_gpt import train_gpt

    run = train_gpt(out, shards, size, steps=steps, batch=batch, seq=seq, seed=seed, val_batches=20, log=print,
                    save_every=steps, keep=1)
    n, tokens = run["N"], run["tokens"]
    return {"N": n, "val_loss": run["val_loss"], "tokens": tokens, "flops": 6.0 * n * tokens}


def fit_power_law(n: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(a, alpha) of loss = a * N^-alpha by least squares in log-log space."""
    slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
    return float(np.exp(intercept)), float(-slope)


def run(out: Path, *, fast: bool, seeds: int, log: Log) -> Result:
    from lmforge.lab.parallel import one_thread

    rows, checks = table_2_1()
    shards = _data(out, fast)
    steps, batch, seq = (6, 8, 32) if fast else (400, 16, 64)
    points = []
    with one_thread():
        for size in FAST_SIZES if fast else SIZES:
            runs = [train_one(out / "runs", shards, size, steps=steps, batch=batch, seq=seq, seed=s)
                    for s in range(seeds)]
            losses = [r["val_loss"] for r in runs]
            p = {"size": "L{} H{} A{}".format(*size), "N (non-embedding)": runs[0]["N"],
                 "val loss": float(np.mean(losses)), "std": float(np.std(losses)), "tokens": runs[0]["tokens"],
                 "compute (6ND FLOPs)": f"{runs[0]['flops']:.3g}"}
            log(f"{p['size']}: N {p['N (non-embedding)']:,}, val loss {p['val loss']:.4f}")
            points.append(p)
    n = np.array([p["N (non-embedding)"] for p in points], dtype=float)
    loss = np.array([p["val loss"] for p in points])
    a, alpha = fit_power_law(n, loss)
    falls = bool(np.all(np.diff(loss) < 0))
    checks += [Check("validation loss falls with model size at equal tokens", "yes (figure 3.1)",
                     "yes" if falls else "no: " + ", ".join(f"{x:.3f}" for x in loss), falls),
               Check("power-law exponent alpha_N of L(N)", f"{KAPLAN_ALPHA_N} (Kaplan eq. 1.1)", f"{alpha:.3f}", None,
                     note="a toy corpus at a fixed, small token budget, not converged: only the shape compares")]
    notes = [f"Toy GPTs (GPT-2 body) trained {steps} steps x {batch} x {seq} tokens each with lr 2e-3, "
             f"{seeds} seed(s); fit loss = {a:.3g} * N^-{alpha:.3f}.",
             "N counts the non-embedding parameters (Kaplan's convention); compute C = 6 N D."]
    return Result(table=points, checks=checks, notes=notes, tables={"GPT-3 table 2.1 from the presets": rows},
                  data={"points": points, "fit": {"a": a, "alpha": alpha}})


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result.data["points"]
    n = np.array([p["N (non-embedding)"] for p in pts], dtype=float)
    loss = np.array([p["val loss"] for p in pts])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(n, loss, yerr=[p["std"] for p in pts], fmt="o", label="toy GPTs, equal tokens")
    fit = result.data["fit"]
    grid = np.geomspace(n.min(), n.max(), 50)
    ax.plot(grid, fit["a"] * grid ** -fit["alpha"], "--", label=f"fit: {fit['a']:.3g} N^-{fit['alpha']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # log axes over less than a decade: no crowded minor labels
    ticks = np.linspace(loss.min(), loss.max(), 5)
    ax.set_yticks(ticks, [f"{t:.2f}" for t in ticks])
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats / token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
