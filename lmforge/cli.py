"""The `lmforge` command line: subcommand name -> module, one dict.

Each module in ``lmforge/commands/`` defines ``add_arguments(parser)`` and ``run(args) -> int | None``.
Modules are imported only when their subcommand runs, so ``lmforge --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from lmforge.errors import LmforgeError

# name -> (module, one-line help). Keep in the order a new user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("lmforge.commands.quickstart", "The whole pipeline on the built-in toy language, offline, in minutes."),
    "toydata": ("lmforge.commands.toydata", "Write the toy-language corpus and its downstream tasks in official formats."),
    "presets": ("lmforge.commands.presets", "List the model presets with their sizes and parameter counts."),
    "params": ("lmforge.commands.params", "Break a preset's parameter count down into embeddings / layers / heads."),
    "tokenizer": ("lmforge.commands.train_tokenizer", "Train a WordPiece / byte-level BPE / Unigram tokenizer."),
    "tokenize": ("lmforge.commands.tokenize", "Print the tokens and ids a tokenizer gives for a text (or a pair)."),
    "prepare": ("lmforge.commands.prepare", "Tokenize a corpus into memory-mapped shards for pre-training."),
    "pretrain": ("lmforge.commands.pretrain", "Pre-train a model with clm / mlm / mlm+nsp / mlm+sop."),
    "finetune": ("lmforge.commands.finetune", "Fine-tune a model on a task (GLUE, SQuAD, SWAG, tagging, your csv/jsonl)."),
    "evaluate": ("lmforge.commands.evaluate", "Evaluate a fine-tuned model on a task split."),
    "predict": ("lmforge.commands.predict", "Write a fine-tuned model's predictions for a task split."),
    "generate": ("lmforge.commands.generate", "Generate text from a decoder (greedy, sampling, beam)."),
    "prompt": ("lmforge.commands.prompt", "Zero-shot prompting with templates (TL;DR:, Q/A, translation, your own)."),
    "fewshot": ("lmforge.commands.fewshot", "GPT-3 style k-shot in-context evaluation on a task."),
    "fill-mask": ("lmforge.commands.fill_mask", "Fill [MASK] tokens with a masked language model."),
    "export": ("lmforge.commands.export", "Write a model and its tokenizer as an HF transformers directory."),
    "compress": ("lmforge.commands.compress", "Quantize (int8 / bf16) or prune a model, with a before / after report."),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists in this build (later issues add the rest)."""
    out = {}
    for name, (module, text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, text)
    return out


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Pre-train, fine-tune, prompt, distil and compress Transformer language models.",
    )
    from lmforge import __version__

    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in _available().items():
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(_available()[args.command][0])
    try:
        return int(module.run(args) or 0)
    except LmforgeError as err:
        print(f"lmforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
