"""The `lmforge` command line: subcommand name -> module, one dict.

Each module in ``lmforge/commands/`` defines ``add_arguments(parser)`` and ``run(args) -> int | None``.
Modules are imported only when their subcommand runs, so ``lmforge --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import NoReturn

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
    "distill": ("lmforge.commands.distill", "Distil a teacher into a smaller student (DistilBERT, TinyBERT, logits)."),
    "finetune": ("lmforge.commands.finetune", "Fine-tune a model on a task (GLUE, SQuAD, SWAG, tagging, your csv/jsonl)."),
    "evaluate": ("lmforge.commands.evaluate", "Evaluate a fine-tuned model on a task split."),
    "predict": ("lmforge.commands.predict", "Write a fine-tuned model's predictions for a task split."),
    "generate": ("lmforge.commands.generate", "Generate text from a decoder (greedy, sampling, beam)."),
    "prompt": ("lmforge.commands.prompt", "Zero-shot prompting with templates (TL;DR:, Q/A, translation, your own)."),
    "fewshot": ("lmforge.commands.fewshot", "GPT-3 style k-shot in-context evaluation on a task."),
    "fill-mask": ("lmforge.commands.fill_mask", "Fill [MASK] tokens with a masked language model."),
    "export": ("lmforge.commands.export", "Write a model and its tokenizer as an HF transformers directory."),
    "serve": ("lmforge.commands.serve", "Serve a model over HTTP: completions, embeddings, fill-mask, classify."),
    "compress": ("lmforge.commands.compress", "Quantize (int8 / bf16) or prune a model, with a before / after report."),
    "lab": ("lmforge.commands.lab", "The pre-training literature's claims as runnable experiments (table, plot, report)."),
}


# commands that continue after Ctrl-C -> the flag that makes them ("": the same command line again)
RESUMABLE = {"pretrain": "--resume", "distill": "--resume", "finetune": "--resume", "quickstart": ""}


# argparse reads "-1e-4" as an option (it only knows -1 and -0.5): accept every float spelling as a number
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$")


def _shown(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Every option that takes a value shows its default: appended when the help text does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.nargs == 0 or action.required or action.default is None
                or action.default is argparse.SUPPRESS or text is argparse.SUPPRESS):
            return text
        return f"{text} (default: {_shown(action.default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse with lmforge's habits: a user error is ONE line (no usage block), `--lr -1e-4` parses,
    and --help shows every default. Sub-commands inherit it (argparse builds them with this class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="lmforge",
        description="Pre-train, fine-tune, evaluate and prompt Transformer language models (BERT, GPT, RoBERTa, "
                    "ALBERT ...): tokenizers, token shards, pre-training, fine-tuning on GLUE / SQuAD / SWAG / "
                    "tagging, generation, few-shot evaluation, fill-mask, HF export.",
    )
    from lmforge import __version__

    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
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
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except LmforgeError as err:
        # the command-line wording of the fix when the raise site gave one (``cli=``), else the message
        print(f"lmforge {args.command}: error: {err.cli or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C; a training run stops at a step boundary with a checkpoint
        import os

        preempted = getattr(err, "preempted", False)  # SIGTERM: stopped cleanly with a checkpoint
        if os.environ.get("RANK", "0") != "0":  # under torchrun every process stops; rank 0 says so
            return 0 if preempted else 130
        flag = RESUMABLE.get(args.command)
        plain = "interrupted; no checkpoint was written" if flag else "interrupted"
        print(f"lmforge {args.command}: {str(err) or plain}", file=sys.stderr)
        if flag == "" or (flag and getattr(err, "checkpoint", None) is not None):
            again = argv if not flag or flag in argv else [*argv, flag]
            print(f"lmforge {args.command}: to continue, run: {command_line(again)}", file=sys.stderr)
        return 0 if preempted else 130


def command_line(argv: list[str]) -> str:
    """``argv`` as the user would type it again: after `lmforge`, `python -m lmforge` or torchrun."""
    import os
    import shlex
    from pathlib import Path

    if "LOCAL_WORLD_SIZE" in os.environ:  # a torchrun worker
        local, world = os.environ["LOCAL_WORLD_SIZE"], os.environ.get("WORLD_SIZE")
        prog = f"torchrun --nproc_per_node {local} -m lmforge" if local == world else \
            "torchrun [your torchrun options] -m lmforge"
    else:
        entry = Path(sys.argv[0])
        prog = "python -m lmforge" if (entry.parent.name, entry.name) == ("lmforge", "__main__.py") else "lmforge"
    return f"{prog} {shlex.join(argv)}"


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. A torchrun worker (WORLD_SIZE > 1) flushes its output and leaves with
    ``os._exit``, skipping interpreter shutdown: gloo's threads outlive ``destroy_process_group`` while anything
    still references the group, and one that touches Python during shutdown aborts the process
    ("terminate called without an active exception", pytorch#179291), turning a finished run into a failed
    one. Every file lmforge writes is closed (and checkpoints fsync'd) before this point; atexit handlers do
    not run. docs/reliability.md#exit."""
    import os

    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
                pass
        os._exit(code)
    sys.exit(code)


def entry() -> NoReturn:
    """The `lmforge` program (console script and ``python -m lmforge``): ``main`` on sys.argv, then
    ``exit_process``."""
    exit_process(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
