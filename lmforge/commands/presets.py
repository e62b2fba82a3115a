"""`lmforge presets`: every named architecture with its sizes and base-model parameter count (built on
the meta device, so even gpt3-175b counts instantly). ``--json``: a list of objects with keys name, family,
layers, hidden, heads, embedding_size, params."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def rows() -> list[dict[str, object]]:
    from lmforge.commands.params import count
    from lmforge.config import ModelConfig
    from lmforge.presets import PRESETS

    out = []
    for name in PRESETS:
        config = ModelConfig.from_preset(name)
        out.append({"name": name, "family": config.family, "layers": config.num_layers, "hidden": config.hidden_size,
                    "heads": config.num_heads, "embedding_size": config.embed_size, "params": count(name)["total"]})
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    header = ("name", "family", "layers", "hidden", "heads", "embedding_size", "params")
    cells = [[str(r[h]) if h != "params" else f"{r[h]:,}" for h in header] for r in table]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) if i >= 2 else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths))))
    return 0
