"""What several commands share: the training flags of `pretrain` and `finetune` (one name, one meaning,
one help text each; only the defaults a command states differ), the hidden spelling of a renamed flag,
and when a progress bar is drawn. Not a command itself (cli.COMMANDS does not list it)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")  # TrainConfig.precision (not imported: --help must not load torch)
SAID = {"save_every": "none: no checkpoints, only the final model", "device": "cuda when available"}


def interactive() -> bool:
    """Progress bars only on a terminal: in a pipe or a log file they are noise (carriage returns, and
    the tokenizers engine's blank lines). Both streams: tqdm draws on stderr, the engine on stdout."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class Renamed(argparse.Action):
    """An old spelling of a flag, kept working but hidden from --help: stores into the new flag's
    destination and says the new name on stderr (a DeprecationWarning would be hidden by default)."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new flag's default stands
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed; use {self.new} "
              "(same meaning)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _said(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_training_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any], *, said: dict[str, str],
                       suppress: bool = False, groups: dict[str, Any] | None = None) -> None:
    """--max-steps --batch-size --lr --warmup --weight-decay --precision --seed --save-every --resume
    --allow-changes --overwrite --device --no-progress, as pretrain and finetune both take them.

    ``defaults``: flag dest -> default; ``said``: how --help words a default that is None (beside SAID).
    ``suppress``: leave unset flags out of the namespace (pretrain: its YAML file may set them; the help
    still states the default). ``groups``: dest -> a mutually exclusive group to add it to.
    """
    def add(dest: str, *flags: str, text: str, **kw: Any) -> None:
        value = defaults.get(dest)
        shown = {**SAID, **said}.get(dest, _said(value))
        kw["default"] = argparse.SUPPRESS if suppress else value
        (groups or {}).get(dest, parser).add_argument(*flags, dest=dest, help=f"{text} (default {shown})", **kw)

    add("max_steps", "--max-steps", type=int, metavar="N", text="optimizer steps to run")
    add("batch_size", "--batch-size", type=int, metavar="N", text="sequences per process per micro-batch")
    add("lr", "--lr", type=float, text="peak learning rate")
    add("warmup", "--warmup", type=float, metavar="W",
        text="linear warmup: a number of steps (W >= 1) or a fraction of the total steps (W < 1)")
    add("weight_decay", "--weight-decay", type=float, text="AdamW weight decay, never on biases / norms")
    add("precision", "--precision", choices=PRECISIONS, text="auto: bf16 autocast on CUDA, fp32 on CPU")
    add("seed", "--seed", type=int, text="seed of the weights, dropout and data order (the same seed gives "
        "the same run)")
    add("save_every", "--save-every", type=int, metavar="N", text="write a resumable checkpoint every N steps")
    off = argparse.SUPPRESS if suppress else False  # store_true flags show no default: off unless given
    parser.add_argument("--resume", action="store_true", default=off, help="continue from the newest checkpoint in "
                        "--out (Ctrl-C or --save-every wrote it); a finished run is left as it is unless its length "
                        "(--max-steps, --tokens, --epochs) is raised")
    parser.add_argument("--allow-changes", action="store_true", default=off, help="with --resume: accept "
                        "settings that differ from the saved run's (else refused, all listed)")
    parser.add_argument("--overwrite", action="store_true", default=off,
                        help="start over in a non-empty --out (the previous run's checkpoints and outputs are removed)")
    add("device", "--device", text="cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        default=argparse.SUPPRESS if suppress else True,
                        help="no progress bar (there is none either when the output is not a terminal)")


__all__ = ["PRECISIONS", "Renamed", "add_training_flags", "interactive"]
