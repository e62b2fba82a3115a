"""`lmforge params NAME`: a preset's base-model parameter count broken down into embeddings / layers /
heads (pooler, final norm), and what the embedding would cost without ALBERT's factorization.
``--json``: an object with keys name, total, embeddings, layers, heads (+ unfactorized_embeddings)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="preset name (see `lmforge presets`)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def count(name: str) -> dict[str, int]:
    """Counts of the base model of preset ``name``, built on the meta device (no memory)."""
    import torch

    from lmforge.config import ModelConfig
    from lmforge.models.model import Model

    config = ModelConfig.from_preset(name)
    with torch.device("meta"):
        model = Model(config)
    body = model.body

    def n(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    embeddings, layers = n(body.embeddings), n(body.layers)
    heads = n(body.pooler) + n(body.final_norm)
    # without factorization every embedding table is H wide and there is no E -> H projection
    e, h = config.embed_size, config.hidden_size
    tables = config.vocab_size + (config.max_positions if config.position_kind == "learned" else 0) + config.type_vocab_size
    unfactorized = tables * h + (2 * h if config.has_embedding_norm else 0)
    return {"total": embeddings + layers + heads, "embeddings": embeddings, "layers": layers, "heads": heads,
            "unfactorized_embeddings": unfactorized if (e != h or config.has_embedding_project) else embeddings}


def run(args: argparse.Namespace) -> int:
    from lmforge.config import ModelConfig

    c = count(args.name)
    if args.json:
        print(json.dumps({"name": args.name, **c}, indent=1))
        return 0
    config = ModelConfig.from_preset(args.name)
    total = c["total"]
    print(f"{args.name}: {total:,} parameters (base model, no task head)")
    print(f"  embeddings  {c['embeddings']:>16,}  ({100 * c['embeddings'] / total:.1f}%)  vocab {config.vocab_size} x E {config.embed_size}")
    print(f"  layers      {c['layers']:>16,}  ({100 * c['layers'] / total:.1f}%)  {config.num_stored_layers} stored of {config.num_layers} applied")
    print(f"  heads       {c['heads']:>16,}  (pooler / final norm)")
    if c["unfactorized_embeddings"] != c["embeddings"]:
        print(f"  without factorization (E = H = {config.hidden_size}) the embeddings would cost "
              f"{c['unfactorized_embeddings']:,} ({c['unfactorized_embeddings'] / c['embeddings']:.1f}x)")
    return 0
