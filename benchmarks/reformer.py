"""Reformer's claims, measured: reversible layers (memory vs depth), LSH attention (time / memory vs length), and
what LSH costs in learning (loss after equal steps), side by side with HF transformers' Reformer.

    python benchmarks/reformer.py [--part layers|lengths|ff|loss|all] [--layers 2 4 8 12] [--depth-length 1024]
                                  [--lengths 1024 2048 4096 8192 16384] [--steps 150] [--threads 1]
                                  [--json FILE] [--plot FILE]

* ``layers``: peak training memory (forward + backward of the output's sum, batch 1, ``--depth-length`` tokens,
  H 256, 4 heads of 64, FFN 1024, local attention in chunks of 64, dropout 0, fp32) against the number of
  layers: lmforge ``standard`` (the ordinary pre-LN stack, one stream), ``stored`` (the reversible math with
  every activation kept by autograd: ``Transformer.reversible_backward = False``), ``reversible`` (inputs
  recomputed in backward) and HF ``ReformerModel`` (its own reversible function) with the same weights.
* ``lengths``: one attention sublayer (LayerNorm, attention, output projection; H 256, 4 heads of 64) forward +
  backward against the length: lmforge ``dense`` (SDPA), ``local`` (chunks of 64), ``lsh`` (chunks of 64, 2 hash
  rounds, HF's bucket rule: 2 * length / 64 buckets, factorised above 128) and HF ``LSHSelfAttention`` with
  lmforge lsh's weights and hash seed (max |difference| printed: they compute the same function).
* ``ff``: peak memory of an evaluation forward and of a reversible training step (2 layers, H 256, FFN 4096,
  ``--ff-length`` tokens) against ``ff_chunk_size`` (the outputs equal the unchunked ones).
* ``loss``: a 4-layer causal LM (H 128, 4 heads, chunks of 32, 256-token sequences, batch 8, AdamW 1e-3)
  trained for ``--steps`` equal steps on tiny-shakespeare (bytes as tokens, ../shared/refdata) with ``dense``,
  ``local``, ``lsh`` and ``lsh`` + reversible layers (the Reformer); validation loss (nats / byte) on held-out
  text and seconds per step. The sides take turns step by step, so the machine's load hits them alike.

Peak memory: the bytes the CPU allocator holds beyond the start of a training call (torch.profiler memory
events, ``attention_scaling.cpu_peak_bytes``), gradients already allocated by a warm-up call, so it counts the
activations kept for backward and the temporaries. Times: the fastest of ``--repeats`` rounds after a warm-up, the sides
interleaved. The load average is printed before and after: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_scaling import cpu_peak_bytes, load, machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "refdata" / "text" / "tinyshakespeare.txt"


def reformer_config(layers: int, length: int, **kw: Any) -> Any:
    from lmforge import ModelConfig

    fields = dict(family="reformer", vocab_size=256, hidden_size=256, num_layers=layers, num_heads=4,
                  intermediate_size=1024, activation="relu", max_positions=length, type_vocab_size=0,
                  embedding_norm=False, pooler=False, norm_placement="pre", causal=True, reversible=True,
                  qkv_bias=False, attention_out_bias=False, lm_head_bias=True, tie_word_embeddings=False,
                  attention_kind="local", local_chunk_length=64, lsh_chunk_length=64, hidden_dropout=0.0,
                  attention_dropout=0.0, pad_token_id=0)
    return ModelConfig(**{**fields, **kw})


def hf_twin(model: Any) -> Any:
    """HF ReformerModel with ``model``'s weights (through the adapter)."""
    import transformers

    from lmforge.models.hf import get_adapter

    adapter = get_adapter("reformer")
    fields = {k: v for k, v in adapter.config_to_hf(model.config).items() if k not in ("model_type", "architectures")}
    hf = transformers.ReformerModel(transformers.ReformerConfig(**fields))
    hf.load_state_dict(adapter.to_hf(model.state_dict(), model.config), strict=False)
    return hf


def train_step(fn: Any, modules: list[torch.nn.Module]) -> None:
    for m in modules:
        m.zero_grad(set_to_none=False)  # the gradients stay allocated: the peak is the activations' and temporaries'
    fn().sum().backward()


def measure(sides: dict[str, tuple[Any, list[torch.nn.Module]]], repeats: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (fn, modules) in sides.items():  # a warm-up (allocates the gradients), then one measured for memory
        train_step(fn, modules)
        out[name] = {"peak_mb": cpu_peak_bytes(lambda: train_step(fn, modules)) / 2**20, "times": []}
    for r in range(repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            t = time.perf_counter()
            train_step(*sides[name])
            out[name]["times"].append(time.perf_counter() - t)
    for name in out:
        out[name]["time_s"] = min(out[name].pop("times"))
    return out


# ------------------------------------------------------------------------------------------------ parts
def part_layers(layer_counts: list[int], length: int, repeats: int) -> dict[str, Any]:
    from lmforge import Model

    rows = {}
    for n in layer_counts:
        torch.manual_seed(0)
        ids = torch.randint(1, 256, (1, length))
        rev = Model(reformer_config(n, length)).train()
        stored = Model(reformer_config(n, length)).train()
        stored.load_state_dict(rev.state_dict())
        stored.body.reversible_backward = False
        standard = Model(reformer_config(n, length, reversible=False)).train()
        hf = hf_twin(rev).train()
        sides = {"standard": (lambda: standard.body(ids).last_hidden_state, [standard]),
                 "stored": (lambda: stored.body(ids).last_hidden_state, [stored]),
                 "reversible": (lambda: rev.body(ids).last_hidden_state, [rev]),
                 "hf-reformer": (lambda: hf(ids).last_hidden_state, [hf])}
        with torch.no_grad():
            diff = float((rev.body(ids).last_hidden_state - hf.eval()(ids).last_hidden_state).abs().max())
        hf.train()
        rows[n] = measure(sides, repeats)
        rows[n]["max_diff_hf"] = diff
        print(f"layers {n:3d}: " + "  ".join(f"{k} {v['peak_mb']:.0f} MB {v['time_s']:.2f}s" for k, v in rows[n].items()
                                           if isinstance(v, dict)) + f"  |lmforge - HF| {diff:.1e}", flush=True)
    return rows


class Sublayer(torch.nn.Module):
    """LayerNorm + one lmforge attention kind (with its output projection)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from lmforge.nn.attention import ATTENTION_KINDS

        self.norm = torch.nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = ATTENTION_KINDS[config.attention_kind](config, layer=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lmforge.nn.attention import AttentionMask

        return self.attn(self.norm(x), mask=AttentionMask(None, True))[0]


def part_lengths(lengths: list[int], repeats: int) -> dict[str, Any]:
    from transformers.models.reformer.modeling_reformer import ReformerAttention

    rows = {}
    for length in lengths:
        torch.manual_seed(0)
        x = torch.randn(1, length, 256, requires_grad=True)
        sides: dict[str, Any] = {}
        mods = {}
        for kind in ("dense", "local", "lsh"):
            c = reformer_config(1, length, attention_kind=kind, num_hashes=2, hash_seed=1, qkv_bias=False,
                                attention_out_bias=False)
            mods[kind] = Sublayer(c).train()
            sides[kind] = (lambda m=mods[kind]: m(x), [mods[kind]])
        lsh = mods["lsh"]
        import transformers

        from lmforge.models.hf import get_adapter

        fields = {k: v for k, v in get_adapter("reformer").config_to_hf(lsh.attn.config).items()
                  if k not in ("model_type", "architectures")}
        fields.update(attn_layers=["lsh"], num_buckets=lsh.attn.num_buckets(length))
        hf = ReformerAttention(transformers.ReformerConfig(**fields), layer_id=0).train()
        with torch.no_grad():
            hf.layer_norm.load_state_dict(lsh.norm.state_dict())
            hf.self_attention.query_key.weight.copy_(lsh.attn.qk.weight)
            hf.self_attention.value.weight.copy_(lsh.attn.v.weight)
            hf.output.dense.weight.copy_(lsh.attn.out.weight)
        sides["hf-lsh"] = (lambda: hf(x).hidden_states, [hf])
        with torch.no_grad():
            diff = float((lsh(x) - hf(x).hidden_states).abs().max())
        rows[length] = measure(sides, repeats)
        rows[length]["max_diff_hf"] = diff
        print(f"length {length:6d}: " + "  ".join(f"{k} {v['peak_mb']:.0f} MB {v['time_s']:.2f}s"
                                                for k, v in rows[length].items() if isinstance(v, dict))
              + f"  |lsh - HF| {diff:.1e}", flush=True)
    return rows


def part_loss(steps: int, seq: int = 256, batch: int = 8, only: list[str] | None = None) -> dict[str, Any]:
    from lmforge import Model

    data = torch.frombuffer(bytearray(SHAKESPEARE.read_bytes()), dtype=torch.uint8).long()
    split = int(len(data) * 0.9)
    train, val = data[:split], data[split:]
    g = torch.Generator().manual_seed(0)
    val_starts = torch.randint(0, len(val) - seq - 1, (32,), generator=g)
    common = dict(hidden_size=128, num_heads=4, intermediate_size=512, activation="gelu", max_positions=seq,
                  local_chunk_length=32, lsh_chunk_length=32, num_hashes=2, num_buckets=16, hidden_dropout=0.0,
                  attention_dropout=0.0)
    variants = {"dense": dict(attention_kind="dense", reversible=False, lm_head_bias=False),
                "local": dict(attention_kind="local", reversible=False, lm_head_bias=False),
                "lsh": dict(attention_kind="lsh", reversible=False, lm_head_bias=False),
                "reformer (lsh + reversible)": dict(attention_kind="lsh", reversible=True)}
    runs = {}
    for name, kw in variants.items():
        if only and name.split()[0] not in only:
            continue
        torch.manual_seed(0)
        m = Model(reformer_config(4, seq, **{**common, **kw}, head="clm")).train()
        runs[name] = {"model": m, "opt": torch.optim.AdamW(m.parameters(), lr=1e-3), "time": 0.0}
    for s in range(steps):
        starts = torch.randint(0, len(train) - seq - 1, (batch,), generator=g)
        ids = torch.stack([train[i:i + seq] for i in starts])
        for name in (list(runs) if s % 2 == 0 else list(runs)[::-1]):
            r = runs[name]
            t = time.perf_counter()
            loss = r["model"](ids, labels=ids).loss
            loss.backward()
            r["opt"].step()
            r["opt"].zero_grad(set_to_none=True)
            r["time"] += time.perf_counter() - t
            r["train_loss"] = loss.item()
        if (s + 1) % 50 == 0 or s + 1 == steps:
            print(f"step {s + 1}: " + "  ".join(f"{k} {v['train_loss']:.3f}" for k, v in runs.items()), flush=True)
    out = {}
    for name, r in runs.items():
        m = r["model"].eval()
        with torch.no_grad():
            losses = [float(m(ids, labels=ids).loss) for ids in
                      (torch.stack([val[i:i + seq] for i in val_starts[j:j + 8]]) for j in range(0, 32, 8))]
        out[name] = {"val_loss": sum(losses) / len(losses), "train_loss": r["train_loss"],
                     "s_per_step": r["time"] / steps}
        print(f"{name}: val {out[name]['val_loss']:.3f} nats/byte, {out[name]['s_per_step']:.3f} s/step", flush=True)
    return out


def part_ff_chunks(length: int, chunks: list[int]) -> dict[str, Any]:
    """Peak memory of an evaluation forward and of a reversible training step against ``ff_chunk_size``
    (2 layers, H 256, FFN 4096: the (T, F) intermediate dominates)."""
    from lmforge import Model

    torch.manual_seed(0)
    ids = torch.randint(1, 256, (1, length))
    rows = {}
    base = None
    for size in chunks:
        m = Model(reformer_config(2, length, intermediate_size=4096, ff_chunk_size=size))
        if base is None:
            base = m
        else:
            m.load_state_dict(base.state_dict())
        m.eval()
        with torch.no_grad():
            infer = cpu_peak_bytes(lambda: m.body(ids)) / 2**20
            y = m.body(ids).last_hidden_state
        m.train()
        train_step(lambda: m.body(ids).last_hidden_state, [m])
        train = cpu_peak_bytes(lambda: train_step(lambda: m.body(ids).last_hidden_state, [m])) / 2**20
        ref = y if size == chunks[0] else ref
        rows[size] = {"eval_peak_mb": infer, "train_peak_mb": train, "max_diff": float((y - ref).abs().max())}
        print(f"ff_chunk_size {size}: eval {infer:.0f} MB, reversible training step {train:.0f} MB, "
              f"|output - unchunked| {rows[size]['max_diff']:.1e}", flush=True)
    return rows


def plot(results: dict[str, Any], file: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    if "layers" in results:
        rows = results["layers"]
        ns = sorted(int(n) for n in rows)
        for side in ("standard", "stored", "reversible", "hf-reformer"):
            axes[0].plot(ns, [rows[str(n) if str(n) in rows else n][side]["peak_mb"] for n in ns], "o-", label=side)
        axes[0].set(xlabel="layers", ylabel="peak training memory (MB)", title="memory vs depth")
        axes[0].legend()
    if "lengths" in results:
        rows = results["lengths"]
        ls = sorted(int(n) for n in rows)
        for side in ("dense", "local", "lsh", "hf-lsh"):
            get = [rows[str(n) if str(n) in rows else n][side] for n in ls]
            axes[1].loglog(ls, [r["time_s"] for r in get], "o-", label=side)
            axes[2].loglog(ls, [r["peak_mb"] for r in get], "o-", label=side)
        axes[1].set(xlabel="tokens", ylabel="forward + backward (s)", title="one attention sublayer: time")
        axes[2].set(xlabel="tokens", ylabel="peak memory (MB)", title="one attention sublayer: memory")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(file, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="all", choices=["layers", "lengths", "loss", "ff", "all"])
    p.add_argument("--ff-length", type=int, default=4096)
    p.add_argument("--ff-chunks", type=int, nargs="+", default=[0, 512, 64])
    p.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8, 12])
    p.add_argument("--depth-length", type=int, default=1024)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--loss-variants", nargs="+", default=None, help="dense local lsh reformer (default all)")
    p.add_argument("--loss-key", default="loss", help="the results key of this loss run (default loss)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": machine("cpu"), "load_before": load(), "date": time.strftime("%Y-%m-%d")}
    print(results["machine"], "| load", results["load_before"], flush=True)
    def run(key: str, fn: Any) -> None:  # each part records the machine, date and load it ran under
        before = load()
        results[key] = fn()
        results[f"meta_{key}"] = {"machine": results["machine"],
                                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "load_before": before, "load_after": load(), "threads": args.threads}

    if args.part in ("layers", "all"):
        run("layers", lambda: part_layers(args.layers, args.depth_length, args.repeats))
    if args.part in ("lengths", "all"):
        run("lengths", lambda: part_lengths(args.lengths, args.repeats))
    if args.part in ("ff", "all"):
        run("ff_chunks", lambda: part_ff_chunks(args.ff_length, args.ff_chunks))
    if args.part in ("loss", "all"):
        run(args.loss_key, lambda: {"steps": args.steps, **part_loss(args.steps, only=args.loss_variants)})
    results["load_after"] = load()
    print("load after", results["load_after"])
    if args.json:
        old = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
        old.update(results)
        Path(args.json).write_text(json.dumps(old, indent=1, default=float) + "\n")
    if args.plot:
        plot(json.loads(Path(args.json).read_text()) if args.json else results, args.plot)


if __name__ == "__main__":
    main()
