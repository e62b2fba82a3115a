"""Resumable checkpoints, written atomically.

A checkpoint is a directory ``OUT/checkpoints/step-00000100/``::

    model.safetensors  config.json   the weights (and the ModelConfig when the model has one)
    extra-<name>.safetensors         networks the objective owns (ELECTRA's generator), if any
    optimizer.pt  scheduler.pt       optimizer / lr-scheduler state_dicts
    rng.pt                           python / numpy / torch / CUDA RNG states, one entry per rank
    trainer_state.json               step, epoch, data position, best metric, the TrainConfig

Atomicity: everything is written into a hidden temporary sibling, every file and the directory are
fsync'ed, and only then is the directory renamed to its final name (a rename is atomic on POSIX), so
a run killed at any moment or a full disk leaves the previous checkpoint complete and loadable;
``latest_checkpoint`` ignores (and removes) leftover temporaries.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import CheckpointError

STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
_PREFIX = "step-"
_TMP = ".tmp-"


# ---------------------------------------------------------------------------- filesystem helpers
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; nothing more we can do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for item in sorted(path.rglob("*")):
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    for item in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(item)
    _fsync_dir(path)


def umask_modes(path: Path) -> None:
    """Give every file under ``path`` the mode a new file gets under the umask (safetensors writes 0600).

    The mode is read from a probe file: os.umask() would change the umask of the whole process for a moment.
    """
    probe = path / f"{_TMP}mode-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    probe.unlink()
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            os.chmod(item, mode)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only when the block completes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{_TMP}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        umask_modes(tmp)
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step (a resumed run): move the old one out of the way first
            old = final.parent / f"{_TMP}old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file through a temporary + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP}{path.name}-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------- weights
def save_weights(model: torch.nn.Module, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """``config.json`` + ``model.safetensors`` in ``directory`` (tied tensors stored once)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "save"):
        config.save(directory / "config.json")
    sd = state_dict if state_dict is not None else model.state_dict()
    save_file(_dedupe(sd), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


def _dedupe(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one name per shared storage (tied embeddings); contiguous CPU copies for safetensors."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.device.type != "meta" and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to("cpu").contiguous()
    return out


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into ``model`` exactly; names missing from the file must be tied aliases."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    stored_ptrs = {t.data_ptr() for n, t in {**params, **buffers}.items() if n in sd}
    really_missing = [n for n in missing if {**params, **buffers}.get(n) is None
                      or {**params, **buffers}[n].data_ptr() not in stored_ptrs]
    if really_missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {really_missing[:5]}, unexpected "
                              f"{list(unexpected)[:5]}; was it written by a different model configuration?")


# ---------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Every RNG the run uses: python, numpy (global), torch CPU and all CUDA devices."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, after removing temporaries a killed save left behind."""
    root = Path(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_TMP):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(root: Path, step: int, *, model_state: dict[str, torch.Tensor], model: torch.nn.Module,
                    optimizer_state: dict, scheduler_state: dict, rng_states: list[dict[str, Any]],
                    trainer_state: dict[str, Any], extra_states: dict[str, dict[str, torch.Tensor]] | None = None,
                    keep: int = 3, on_written: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` atomically under ``root`` and keep the newest ``keep``; rank 0 only."""
    from safetensors.torch import save_file

    final = Path(root) / checkpoint_name(step)
    previous = latest_checkpoint(root)
    try:
        with atomic_dir(final) as tmp:
            save_weights(model, tmp, model_state)
            for name, sd in (extra_states or {}).items():
                save_file(_dedupe(sd), str(tmp / f"extra-{name}.safetensors"))
            torch.save(optimizer_state, tmp / "optimizer.pt")
            torch.save(scheduler_state, tmp / "scheduler.pt")
            torch.save(rng_states, tmp / "rng.pt")
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
            if on_written is not None:
                on_written(tmp)
    except OSError as err:
        where = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {final.name} ({err}); {where}. "
                              "Free disk space (or lower --keep) and resume with --resume.") from err
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, *, rank: int = 0) -> dict[str, Any]:
    """Everything in checkpoint ``path`` (weights are loaded by the caller from ``path/model.safetensors``)."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint ({STATE_FILE} is missing)")
    try:
        trainer_state = json.loads(state_file.read_text(encoding="utf-8"))
        # our own files, written by save_checkpoint: they hold python / numpy RNG tuples, so not weights_only
        optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        scheduler = torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False)
        rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({err}); delete it to resume from the one before") from err
    rng = rngs[rank] if rank < len(rngs) else None
    return {"trainer_state": trainer_state, "optimizer": optimizer, "scheduler": scheduler, "rng": rng,
            "weights": path / WEIGHTS_FILE,
            "extra": {p.name[len("extra-"):-len(".safetensors")]: p for p in path.glob("extra-*.safetensors")}}


__all__ = ["atomic_dir", "atomic_write_text", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "umask_modes",
           "load_weights", "rng_state", "save_checkpoint", "save_weights", "set_rng_state"]
