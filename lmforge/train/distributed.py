"""Multi-process training with torch.distributed: nothing home-made, only setup and thin helpers.

Under ``torchrun --nproc_per_node N`` the environment carries RANK / LOCAL_RANK / WORLD_SIZE; we join
the process group (gloo on CPU, nccl on CUDA) and wrap the model in DistributedDataParallel, or in
FSDP2 (``fully_shard``, CPU or GPU). Without those variables everything is a plain single process.
Rank 0 alone logs and writes files; every rank reads its own slice of each global batch.
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from lmforge.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | torch.device | None) -> torch.device:
    """A --device / device= value as a torch.device (None: cuda when available), with one clear error for
    a name torch does not know or a GPU this machine does not have."""
    try:
        device = torch.device(name if name is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise InputError(f"device {str(name)!r} is not a device ({err}); pass --device cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(name)!r} asks for a GPU but this machine has no CUDA device; "
                         "pass --device cpu.")
    return device


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group when there is one; pick the device (CUDA when available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def wrap_model(model: torch.nn.Module, info: DistInfo, *, strategy: str = "ddp",
               precision: torch.dtype | None = None) -> torch.nn.Module:
    """DDP (or FSDP2) around ``model`` when there are several processes; ``model`` itself otherwise.

    FSDP (gloo on CPU, nccl on GPU, the same code): every transformer block is its own shard group, so one
    block's weights are gathered at a time; what is left - the embeddings, the head with its tied decoder
    (which reads the word embedding's weight directly), the final norm - forms the root group, so a tied
    matrix is one sharded parameter updated once. ``precision`` bf16 on GPU: bf16 compute, fp32 reduction.
    """
    if strategy == "fsdp":
        if not info.distributed:  # one process: nothing to shard (checkpoints are still DCP, to re-shard later)
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()
        if precision is not None and info.device.type == "cuda":
            mp = MixedPrecisionPolicy(param_dtype=precision, reduce_dtype=torch.float32)
        layers = getattr(getattr(model, "body", None), "layers", None)
        for layer in layers or []:  # shard layer by layer so only one layer's weights are gathered at a time
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=may_leave_parameters_unused(model))


def may_leave_parameters_unused(model: torch.nn.Module) -> bool:
    """Whether DDP must search every step for parameters a step leaves unused (``find_unused_parameters``).

    In an lmforge ``Model`` only the pooler can be: a body with one, under a head whose loss never reads it
    (``POOLER_FREE_HEADS``: MLM, token, span losses skip it). Everything else is read at every step, and the
    search is then a graph traversal per step plus torch's warning that it found nothing. Any other module
    (a generator + discriminator pair, a user's model) keeps the search.
    """
    from lmforge.models.heads import POOLER_FREE_HEADS

    config, body = getattr(model, "config", None), getattr(model, "body", None)
    if config is None or body is None or not hasattr(config, "head"):
        return True
    return getattr(body, "pooler", None) is not None and config.head in POOLER_FREE_HEADS


def on_meta(model: torch.nn.Module) -> bool:
    """Whether ``model`` was built on the meta device (shapes only, no memory)."""
    return any(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])


def materialize(model: torch.nn.Module, device: torch.device, *, seed: int | None = None) -> torch.nn.Module:
    """Allocate a meta-device model on ``device`` and initialise it: after ``fully_shard`` each process
    allocates and initialises only its shards, so a model larger than one process's memory never exists
    whole. Uses the model's ``init_weights`` (else each module's ``reset_parameters``) and recomputes
    fixed buffers (``reset_parameters`` of modules without parameters). ``seed``: seed the init with it first (per rank: on CPU a DTensor's
    random init draws each shard from the local generator, so equal seeds would give equal shards)."""
    model.to_empty(device=device)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        raw = unwrap(model)
        if hasattr(raw, "init_weights"):
            raw.init_weights()
        else:
            for module in raw.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for module in raw.modules():  # modules of buffers only (the sinusoidal table): recompute them
            if hasattr(module, "reset_parameters") and next(module.parameters(recurse=False), None) is None:
                module.reset_parameters()
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_fsdp(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - older torch
        return False
    return isinstance(unwrap(model), FSDPModule)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (identity in one process)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def all_reduce_grads(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of ``params`` over ranks in place (networks outside DDP: ELECTRA's generator)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not info.distributed or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Unsharded model / optimizer state dicts (collective under FSDP: call on every rank)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
        return msd, osd
    return unwrap(model).state_dict(), (optimizer.state_dict() if optimizer is not None else None)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def sharded_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ...}`` as torch distributed checkpoint saves them: each rank's shards
    under FSDP (plain tensors otherwise), keyed by parameter name, so they load on any number of processes."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(unwrap(model) if not is_fsdp(model) else model, optimizer)
    return {"model": msd, "optimizer": osd}


def load_sharded_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Put what ``sharded_state_dicts`` gave (after ``dcp.load`` filled it) back into the model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(unwrap(model) if not is_fsdp(model) else model, optimizer,
                   model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def refuse_under_torchrun(command: str) -> None:
    """Commands that run whole pipelines in one process (quickstart, lab) stop under ``torchrun``: each rank
    would run every stage itself, write the same folder, and join a process group per stage."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        from lmforge.errors import ConfigError

        raise ConfigError(f"lmforge {command} runs in one process, but torchrun started {world} (WORLD_SIZE={world}): "
                          f"run `lmforge {command}` without torchrun; to train on several processes run "
                          "`torchrun --nproc_per_node N -m lmforge pretrain ...` (or finetune / distill)")


def is_rank_zero() -> bool:
    """The process that speaks for a run: rank 0 of torchrun's environment (also before the group is joined),
    or the only process."""
    return os.environ.get("RANK", "0") == "0"


def shutdown(*, synchronize: bool = True) -> None:
    """Leave the process group (no-op without one): with ``synchronize``, first wait until every process got
    here, so none tears its connections down while another still uses them; then destroy the group, so
    gloo's threads are not left running into interpreter shutdown (docs/reliability.md#exit)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
    except Exception as err:  # noqa: BLE001 - a peer stopped on an error of its own, which it reports itself
        print(f"lmforge: rank {dist.get_rank()}: another process stopped first ({type(err).__name__}); leaving "
              "the process group", file=sys.stderr, flush=True)
    finally:
        dist.destroy_process_group()


_scopes = 0  # how many process_group_scope blocks this process is inside


@contextmanager
def process_group_scope() -> Iterator[None]:
    """Tear down, on every way out (return, LmforgeError, KeyboardInterrupt / SIGTERM's TrainingInterrupted),
    the process group that the code inside joined with ``init_distributed``.

    Only the outermost scope that found no group owns it: a recipe that runs another (finetune_seeds,
    distill's task stages) keeps ONE group for the whole process, since gloo under torchrun cannot join a
    second time (the store still holds the first group's addresses: "Connection refused"). A group the
    caller created is left alone. Success waits for every rank before destroying; an error does not (the
    other ranks may never arrive)."""
    global _scopes
    owner = _scopes == 0 and not (dist.is_available() and dist.is_initialized())
    _scopes += 1
    finished = False
    try:
        yield
        finished = True
    finally:
        _scopes -= 1
        if owner:
            shutdown(synchronize=finished)


F = TypeVar("F", bound=Callable[..., Any])


def tears_down_process_group(fn: F) -> F:
    """Decorator: run ``fn`` inside ``process_group_scope`` (the recipes that may run under torchrun)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with process_group_scope():
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]


__all__ = ["DistInfo", "all_reduce_grads", "all_reduce_mean", "barrier", "broadcast_object", "full_state_dicts",
           "gather_objects", "init_distributed", "is_fsdp", "is_rank_zero", "materialize", "on_meta", "load_optimizer_state", "load_sharded_state_dicts",
           "process_group_scope", "sharded_state_dicts", "shutdown", "tears_down_process_group", "unwrap", "wrap_model"]
