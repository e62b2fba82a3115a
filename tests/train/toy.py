"""A stand-in model and objective for the loop tests (no dependency on lmforge.models).

Also a script: ``python toy.py OUT --steps N --save-every K [--resume] [--sleep S] [--nan-at STEP]``
trains the toy model with the real Trainer (used by the SIGKILL, torchrun, FSDP and fault tests).
``--model gpt``: a tiny lmforge GPT instead (tied embeddings: its decoder reads the word embedding);
``--enospc-at-save N``: the N-th checkpoint write fails with "No space left on device";
``--save-pause S``: every checkpoint write pauses S seconds before its manifest (a window to kill it in);
``--shards FILE``: each rank writes its local shard of the word embedding before and after training;
``--no-teardown``: exit without destroying the process group (benchmarks/faults.py --exit-runs compares).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB, SEQ = 50, 16


class ToyConfig:
    num_layers = 2


class ToyLM(nn.Module):
    """Embedding -> 2 'layers' (Linear + GELU + LayerNorm, dropout) -> head, with a learned bias."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = ToyConfig()
        self.body = nn.Module()
        self.body.embeddings = nn.Embedding(VOCAB, 32)
        self.body.layers = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.LayerNorm(32))
                                         for _ in range(2))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(32, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.body.embeddings(input_ids)
        for layer in self.body.layers:
            h = h + self.drop(layer(h))
        return self.head(h)  # (B, T, V)


def tiny_gpt(dropout: float = 0.0):
    """A 2-layer lmforge GPT over the toy vocabulary (odd, so FSDP's shards of the tied matrix are uneven)."""
    from lmforge import Model, ModelConfig

    return Model(ModelConfig.from_preset("gpt-tiny", num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                         max_positions=SEQ, vocab_size=VOCAB + 1, hidden_dropout=dropout,
                                         attention_dropout=dropout, head="clm"))


class ToyObjective:
    """Next-token prediction; metrics like lmforge's objectives (detached tensors)."""

    def __init__(self, nan_at_call: int | None = None) -> None:
        self.calls, self.nan_at_call = 0, nan_at_call

    def loss(self, model, batch):
        self.calls += 1
        logits = model(batch["input_ids"])
        logits = getattr(logits, "logits", logits)[..., :VOCAB]  # an lmforge Model returns a ModelOutput
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch["input_ids"][:, 1:].reshape(-1))
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        n = torch.tensor(batch["input_ids"][:, 1:].numel())
        return loss, {"loss": loss.detach(), "clm_loss": loss.detach(), "weight": n, "predicted_tokens": n,
                      "tokens": torch.tensor(batch["input_ids"].numel())}


def toy_examples(n: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Sequences with structure (x[t+1] = x[t] + 1 mod V) so the loss can go down."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, VOCAB, size=n)
    return [(s + np.arange(SEQ)) % VOCAB for s in starts]


def collate(examples):
    return {"input_ids": torch.from_numpy(np.stack(examples)).long()}


def main(argv: list[str] | None = None) -> int:
    from lmforge.train.distributed import process_group_scope

    if "--no-teardown" in (sys.argv[1:] if argv is None else argv):  # as finetune / distill did before: exit with the group
        return _main(argv)
    with process_group_scope():  # as the recipes: leave the process group on every way out
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    from lmforge.train import TrainConfig, Trainer, list_source
    from lmforge.train.distributed import init_distributed
    from lmforge.train.loop import seed_everything

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--save-every", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--global-batch", type=int, default=None)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--nan-at", type=int, default=None)
    ap.add_argument("--distributed", default="ddp")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="toy", choices=["toy", "gpt"])
    ap.add_argument("--on-nan", default="stop")
    ap.add_argument("--enospc-at-save", type=int, default=None)
    ap.add_argument("--shards", default=None)
    ap.add_argument("--save-pause", type=float, default=0.0)
    ap.add_argument("--meta", action="store_true", help="build the model on the meta device")
    ap.add_argument("--grad-ckpt", action="store_true", help="recompute activations (grad_checkpointing)")
    ap.add_argument("--no-teardown", action="store_true", help="exit without destroying the process group")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    info = init_distributed(args.device)
    seed_everything(0)
    with torch.device("meta") if args.meta else torch.device("cpu"):
        model = ToyLM(args.dropout) if args.model == "toy" else tiny_gpt(args.dropout)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, global_batch_size=args.global_batch,
                      lr=3e-3, warmup_steps=3, save_every=args.save_every, keep=2, log_every=1, progress=False,
                      seq_len=SEQ, distributed=args.distributed, on_nan=args.on_nan, grad_checkpointing=args.grad_ckpt)
    source = list_source(toy_examples(), collate, batch_size=args.batch_size, seed=0, rank=info.rank,
                         world_size=info.world_size)
    objective = ToyObjective(nan_at_call=args.nan_at)
    if args.sleep:
        inner = objective.loss

        def slow(model, batch):
            time.sleep(args.sleep)
            return inner(model, batch)

        objective.loss = slow
    if args.save_pause:
        _pause_checkpoint_writes(args.save_pause)
    if args.enospc_at_save:
        _fail_checkpoint_write(args.enospc_at_save)
    trainer = Trainer(model, objective, source, cfg, out_dir=args.out, dist=info)
    if args.shards:
        _record_shards(trainer, args.shards, info.rank)
    from lmforge.train.loop import TrainingInterrupted

    try:
        trainer.train(resume=args.resume)
        if args.shards:
            _record_shards(trainer, args.shards, info.rank, after=True)
    except TrainingInterrupted as stop:  # as the CLI: SIGTERM is a clean stop (exit 0), Ctrl-C 130
        print(f"toy: {stop}", file=sys.stderr, flush=True)
        return 0 if stop.preempted else 130
    return 0


def _fail_checkpoint_write(n: int) -> None:
    """The n-th checkpoint's first file write raises ENOSPC (both checkpoint formats write through these)."""
    import errno

    import torch.distributed.checkpoint as dcp

    from lmforge.train import checkpoint as ckpt

    count = {"n": 0}

    def wrap(fn):
        def failing(*a, **k):
            count["n"] += 1
            if count["n"] == n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return fn(*a, **k)
        return failing

    ckpt.save_weights = wrap(ckpt.save_weights)
    dcp.save = wrap(dcp.save)


def _pause_checkpoint_writes(seconds: float) -> None:
    from lmforge.train import checkpoint as ckpt

    write = ckpt.write_manifest

    def paused(directory):
        time.sleep(seconds)  # the checkpoint's files are half there: a kill now must leave the previous one usable
        return write(directory)

    ckpt.write_manifest = paused


_SHARDS: dict[str, torch.Tensor] = {}


def _record_shards(trainer, path: str, rank: int, after: bool = False) -> None:
    """The word embedding as this rank holds it (its FSDP shard, or the whole matrix) into ``path.rankN``."""
    weight = trainer.model.body.embeddings.word.weight
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    _SHARDS["after" if after else "before"] = local.detach().clone()
    if after:
        torch.save(_SHARDS, f"{path}.rank{rank}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lmforge.cli import exit_process

    exit_process(main())  # as the `lmforge` program: a torchrun worker skips interpreter shutdown
