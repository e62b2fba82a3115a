"""Resumable checkpoints, written atomically.

A checkpoint is a directory ``OUT/checkpoints/step-00000100/``::

    model.safetensors  config.json   the weights (and the ModelConfig when the model has one)
    extra-<name>.safetensors         networks the objective owns (ELECTRA's generator), if any
    optimizer.pt  scheduler.pt       optimizer / lr-scheduler state_dicts
    rng.pt                           python / numpy / torch / CUDA RNG states, one entry per rank
    trainer_state.json               step, epoch, data position, best metric, the TrainConfig
    manifest.json                    size + sha256 of every other file, written last (damage shows on resume)

A sharded checkpoint (``--distributed fsdp``) holds ``dcp/`` instead of ``model.safetensors`` and
``optimizer.pt``: torch distributed checkpoint files, one per rank plus ``.metadata``, keyed by parameter
name, so it loads on another number of processes (re-sharding). All ranks write into the same temporary
directory (a filesystem every node sees), rank 0 adds the rest and renames it.

Every ``.pt`` file loads with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers
only (the numpy RNG state is stored as a tensor), so no file can make the loader run code.

Atomicity: everything is written into a hidden temporary sibling, every file and the directory are
fsync'ed, and only then is the directory renamed to its final name (a rename is atomic on POSIX), so
a run killed at any moment or a full disk leaves the previous checkpoint complete and loadable;
``latest_checkpoint`` ignores (and removes) leftover temporaries. A checkpoint damaged later (a cut or
altered file, a missing shard) fails ``verify_checkpoint`` against its manifest; ``usable_checkpoints``
moves it aside as ``damaged-step-...`` (nothing is deleted) so a resume falls back to the one before.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
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
MANIFEST_FILE = "manifest.json"
SHARDED_DIR = "dcp"
_DAMAGED = "damaged-"
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
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a tensor: the file then loads with torch.load(weights_only=True)
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """``manifest.json``: size and sha256 of every file in ``directory``; written last, checked on resume."""
    directory = Path(directory)
    files = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    (directory / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def verify_checkpoint(path: Path) -> str | None:
    """None when ``path`` is complete and unaltered, else what is wrong (a missing, cut or changed file).

    A checkpoint without a manifest (written before manifests existed) only needs a readable state file."""
    path = Path(path)
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{STATE_FILE} is unreadable ({err})"
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        for name, want in files.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != want["size"]:
                return f"{name} has {file.stat().st_size} bytes, {want['size']} were written"
            if _sha256(file) != want["sha256"]:
                return f"{name} was altered (its sha256 differs from the one written)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST_FILE} is unreadable ({err})"
    return None


def usable_checkpoints(root: Path, note: Callable[[str], None] = print) -> list[Path]:
    """Complete checkpoints, oldest first, after moving damaged newest ones aside (renamed, not deleted)
    and saying so: a resume then continues from the newest checkpoint that verifies."""
    found = list_checkpoints(root)
    while found:
        problem = verify_checkpoint(found[-1])
        if problem is None:
            break
        bad = found.pop()
        aside = bad.with_name(f"{_DAMAGED}{bad.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(bad, aside)
        fallback = f"falling back to {found[-1].name}" if found else "no earlier checkpoint: starting from step 0"
        note(f"resume: checkpoint {bad.name} is damaged ({problem}); moved aside to {aside.name}; {fallback}")
    return found


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
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    final = Path(root) / checkpoint_name(step)
    previous = latest_checkpoint(root)
    try:
        with atomic_dir(final) as tmp:
            save_weights(model, tmp, model_state)
            for name, sd in (extra_states or {}).items():
                save_file(_dedupe(sd), str(tmp / f"extra-{name}.safetensors"))
            torch.save(optimizer_state, tmp / "optimizer.pt")
            _write_run_state(tmp, scheduler_state, rng_states, trainer_state, on_written)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save: a RuntimeError of its writer on a full disk
        where = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {final.name} ({err}{_free_space(root)}); {where}. "
                              "Free disk space (or lower --keep) and resume with --resume.") from err
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_run_state(tmp: Path, scheduler_state: dict, rng_states: list[dict[str, Any]], trainer_state: dict[str, Any],
                     on_written: Callable[[Path], None] | None) -> None:
    """What both checkpoint formats add beside the weights (scheduler, RNG, trainer state), then the manifest
    that makes the directory valid."""
    torch.save(scheduler_state, tmp / "scheduler.pt")
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
    write_manifest(tmp)
    if on_written is not None:
        on_written(tmp)


def save_sharded_checkpoint(root: Path, step: int, *, state: dict[str, Any], info: Any, scheduler_state: dict,
                            rng_states: list[dict[str, Any]], trainer_state: dict[str, Any], keep: int = 3,
                            on_written: Callable[[Path], None] | None = None) -> Path:
    """Checkpoint ``step`` with torch distributed checkpoint: every rank writes its shards of ``state`` (model
    and optimizer, ``sharded_state_dicts``) into one temporary directory, rank 0 adds the scheduler, RNG and
    trainer state and a manifest, and renames it: valid only when complete. Call on every rank."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from lmforge.train.distributed import barrier, broadcast_object

    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP}{final.name}-sharded"  # one name every rank knows
    previous = list_checkpoints(root)[-1] if info.is_main and list_checkpoints(root) else None
    error: str | None = None
    if info.is_main:
        try:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        except OSError as err:
            error = str(err)
    error = broadcast_object(error, info)
    if error is None:
        try:
            dcp.save(state, checkpoint_id=str(tmp / SHARDED_DIR))  # collective: every rank's shards
        except (Exception, CheckpointException) as err:  # (a BaseException) gathering each rank's OSError
            error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    barrier(info)
    errors = [error] if not info.distributed else _gather_errors(error, info)
    error = next((e for e in errors if e), None)
    if error is None and info.is_main:
        try:
            _write_run_state(tmp, scheduler_state, rng_states, trainer_state, on_written)
            umask_modes(tmp)
            _fsync_tree(tmp)
            if final.exists():  # re-saving the same step (a resumed run)
                old = root / f"{_TMP}old-{final.name}-{os.getpid()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(root)
        except (OSError, RuntimeError) as err:  # RuntimeError: torch.save's writer on a full disk
            error = str(err)
    error = broadcast_object(error, info)
    if error is not None:
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        error += _free_space(root)
        previous = broadcast_object(str(previous) if previous else None, info)
        where = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {final.name} ({error}); {where}. "
                              "Free disk space (or lower --keep) and resume with --resume.")
    if info.is_main:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def _free_space(root: Path) -> str:
    """``; DIR has N MiB free`` (a full disk is the usual reason a write fails), or nothing."""
    try:
        return f"; {root} has {shutil.disk_usage(root).free / 2**20:.1f} MiB free"
    except OSError:
        return ""


def _gather_errors(error: str | None, info: Any) -> list[str | None]:
    from lmforge.train.distributed import gather_objects

    return gather_objects(error, info)


def load_sharded_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Fill ``state`` (``sharded_state_dicts`` of this run's model and optimizer) from ``path/dcp`` in place,
    re-sharding to this run's number of processes."""
    import torch.distributed.checkpoint as dcp

    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load(state, checkpoint_id=str(Path(path) / SHARDED_DIR))
    except (Exception, CheckpointException) as err:  # CheckpointException (a BaseException) wraps each rank's
        raise CheckpointError(f"the sharded checkpoint in {path} cannot be loaded ({str(err).strip()[-300:]}); "
                              "delete it to resume from the one before") from None


def load_checkpoint(path: Path, *, rank: int = 0) -> dict[str, Any]:
    """Everything in checkpoint ``path`` (weights are loaded by the caller from ``path/model.safetensors``)."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint ({STATE_FILE} is missing)")
    try:
        trainer_state = json.loads(state_file.read_text(encoding="utf-8"))
        # weights_only: tensors and plain containers only, never code (the numpy RNG state is a tensor)
        optimizer = None
        if (path / "optimizer.pt").is_file() or not (path / SHARDED_DIR).is_dir():
            optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        scheduler = torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)
        rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({err}); delete it to resume from the one before") from err
    rng = rngs[rank] if rank < len(rngs) else None
    return {"trainer_state": trainer_state, "optimizer": optimizer, "scheduler": scheduler, "rng": rng,
            "weights": path / WEIGHTS_FILE, "sharded": (path / SHARDED_DIR) if (path / SHARDED_DIR).is_dir() else None,
            "extra": {p.name[len("extra-"):-len(".safetensors")]: p for p in path.glob("extra-*.safetensors")}}


__all__ = ["atomic_dir", "atomic_write_text", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "umask_modes",
           "load_sharded_checkpoint", "load_weights", "rng_state", "save_checkpoint", "save_sharded_checkpoint",
           "save_weights", "set_rng_state", "usable_checkpoints", "verify_checkpoint", "write_manifest"]
