"""The one rule for every command that writes a directory (``--out``): pretrain, finetune, evaluate /
predict / fewshot ``--out``, quickstart, export, ``tokenizer train``, prepare and toydata.

A non-empty output directory is refused with one line that names ``--overwrite`` (and ``--resume``
when the directory holds a training run the command can continue). ``--overwrite`` writes into it,
first removing the entries named in ``owned`` (a previous run's checkpoints, metrics ... that would
otherwise mix with the new run's); every other file there is left alone. ``prepare`` on the same
inputs stays a no-op: it calls this only when it has something to write.

    check_out_dir(out, overwrite=args.overwrite)                        # tokenizer train, toydata, ...
    check_out_dir(out, overwrite=o, resume=r, owned=RUN_STATE)          # pretrain, finetune
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from lmforge.errors import ConfigError

# what a Trainer run leaves in its output directory besides the model (lmforge/train/loop.py,
# checkpoint.py, logging.py): --overwrite removes these so a later --resume cannot pick up the old run
RUN_STATE = ("checkpoints", "best", "trainer_state.json", "metrics.jsonl", "loss.png", "tensorboard", ".tmp-final")
_RUN_MARKERS = ("checkpoints", "trainer_state.json")


def check_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool | None = None,
                  owned: Iterable[str] = (), remove: bool = True, flag: str = "--out") -> Path:
    """Apply the output-directory rule to ``out`` before anything is written there; returns it as a Path.

    Args:
        overwrite: ``--overwrite`` was given: a non-empty directory is written into.
        resume: None for commands that cannot continue a run; else whether ``--resume`` was given
            (continuing the run in ``out`` is the one case where a non-empty directory is expected).
        owned: names under ``out`` that ``--overwrite`` removes first.
        remove: False on the processes of a torchrun job other than rank 0 (they only check).
        flag: the option the user gave the directory with, for the message.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out} is a file; give a directory")
    if resume and overwrite:
        raise ConfigError("give --resume (continue the run in the directory) or --overwrite (start over in it), "
                          "not both")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries or resume:
        return out
    if overwrite:
        for name in owned if remove else ():
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return out
    shown = ", ".join(entries[:4]) + (" ..." if len(entries) > 4 else "")
    if resume is not None and _holds_run(out):
        raise ConfigError(f"{flag} {out} holds a training run ({shown}); pass --resume to continue it, --overwrite "
                          "to start over in it, or choose another directory")
    raise ConfigError(f"{flag} {out} is not empty ({shown}); pass --overwrite to write over it, or choose another "
                      "directory")


def _holds_run(out: Path) -> bool:
    """A training run in ``out`` or in one of its folders (`finetune --seeds` keeps one per seed-S/)."""
    folders = [out, *(p for p in out.iterdir() if p.is_dir())]
    return any((d / name).exists() for d in folders for name in _RUN_MARKERS)


__all__ = ["RUN_STATE", "check_out_dir"]
