"""The Objective protocol, the batch source that feeds the trainer, and metric reduction.

An objective turns a tokenized split (``ShardDataset``) into training examples, collates them into a
batch of tensors and computes the loss by calling the model itself, so objectives that own extra
networks (ELECTRA's generator, a distillation teacher) fit the same seam.

Exact resume: the i-th example of an epoch is a pure function of ``(seed, epoch, i)``. ``BatchSource``
orders examples by a permutation seeded with ``(seed, epoch)`` and builds each example from an RNG
seeded with ``(seed, epoch or copy, example id)``, so a resumed run seeks to ``(epoch, step)`` in O(1)
without replaying the batches it skipped.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lmforge.errors import DataError

Example = dict[str, Any]  # numpy arrays / ints for one sequence, before collation
Batch = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]  # detached 0-dim tensors: no device sync until someone logs them


def example_rng(seed: int, stream: int, index: int, salt: int) -> np.random.Generator:
    """A generator that depends only on its arguments: the seed of one example's randomness.

    ``stream`` is the epoch (dynamic) or the duplicate copy (static); ``salt`` separates uses.
    """
    return np.random.default_rng([seed, stream, index, salt])


@runtime_checkable
class ExampleSet(Protocol):
    """The examples one objective builds from one split; ``len`` examples per epoch."""

    def __len__(self) -> int: ...

    def example(self, index: int, *, seed: int, epoch: int) -> Example:
        """Example ``index`` (0 <= index < len) as seen in ``epoch``; a pure function of its arguments."""
        ...


@runtime_checkable
class Objective(Protocol):
    """What the trainer needs from a pre-training (or fine-tuning) objective."""

    name: str
    head: str  # the model head this objective trains: "clm" | "mlm" | "pretraining" | ...
    seq_len: int

    def heads(self, config: Any) -> str:
        """The head name the model must be built with for this objective."""
        ...

    def examples(self, dataset: Any) -> ExampleSet:
        """Index ``dataset`` (a ShardDataset) once; the result builds any example on demand."""
        ...

    def collate(self, examples: Sequence[Example]) -> Batch:
        """Stack examples into a batch of tensors (padding where lengths differ)."""
        ...

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Run the model on ``batch`` and return the loss to minimize and detached metrics."""
        ...

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Networks the objective owns and trains besides the model (ELECTRA's generator); {} here."""
        ...


class ObjectiveBase:
    """Defaults shared by the built-in objectives."""

    name = "base"
    head = "mlm"
    seq_len = 0

    def heads(self, config: Any) -> str:
        return self.head

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return {}


class BatchSource:
    """Batches of one objective over one split, addressable by ``(epoch, step)``.

    A step is one micro-batch of the *global* batch ``batch_size * world_size``: rank ``r`` gets the
    ``r``-th slice of ``batch_size`` examples, so ``world_size`` processes together see exactly the
    examples one process sees with ``batch_size * world_size``. An incomplete global batch at the end
    of an epoch is dropped (every step has the same shape) unless ``drop_last=False``; then the last
    step is smaller (fine-tuning on small data; single-process evaluation over every example).

    >>> source = BatchSource(objective, ShardDataset(d, "train"), batch_size=32, seed=0)
    >>> batch = source.batch(epoch=0, step=5)             # O(1): no replay
    >>> for epoch, step, batch in source.iterate(epoch=0, step=5): ...   # resume here
    """

    def __init__(self, objective: Objective, dataset: Any, *, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"bad batch layout: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.objective, self.dataset = objective, dataset
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle
        self.examples = objective.examples(dataset)
        self.global_batch = batch_size * world_size
        self.examples_per_epoch = len(self.examples)
        self.drop_last = drop_last
        self.steps_per_epoch = (self.examples_per_epoch // self.global_batch if drop_last
                                else -(-self.examples_per_epoch // self.global_batch))
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the data gives {self.examples_per_epoch} {objective.name} example(s) of {objective.seq_len} "
                f"tokens per epoch, fewer than one global batch of {self.global_batch}; lower the batch size "
                "or the sequence length, or add data")
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    def order(self, epoch: int) -> np.ndarray:
        """Example ids in the order epoch ``epoch`` visits them (a seeded permutation)."""
        if self._order_epoch != epoch:
            n = self.examples_per_epoch
            self._order = (np.random.default_rng([self.seed, epoch, 0x0BA7C4]).permutation(n)
                           if self.shuffle else np.arange(n))
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def example_ids(self, epoch: int, step: int) -> np.ndarray:
        """The ids of the examples this rank gets at ``(epoch, step)``."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch}) of epoch {epoch}")
        start = step * self.global_batch + self.rank * self.batch_size
        return self.order(epoch)[start:start + self.batch_size]

    def batch(self, epoch: int, step: int) -> Batch:
        """This rank's batch at ``(epoch, step)``."""
        ids = self.example_ids(epoch, step)
        if len(ids) == 0:
            raise IndexError(f"rank {self.rank} has no example at the last, partial step {step} (drop_last=False "
                             f"with world_size={self.world_size}); use drop_last=True for multi-process training")
        return self.objective.collate([self.examples.example(int(i), seed=self.seed, epoch=epoch) for i in ids])

    def iterate(self, *, epoch: int = 0, step: int = 0) -> Iterator[tuple[int, int, Batch]]:
        """Endless ``(epoch, step, batch)`` from the given position; resume from ``step + 1``."""
        while True:
            if step >= self.steps_per_epoch:
                epoch, step = epoch + 1, 0
            yield epoch, step, self.batch(epoch, step)
            step += 1

    def __len__(self) -> int:
        return self.steps_per_epoch



def group_by_length(order: np.ndarray, lengths: np.ndarray, *, batch_size: int, chunk_batches: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``order`` (a permutation) regrouped so each batch holds examples of similar length.

    HF ``group_by_length``'s scheme (its chunks are 50 batches; 8 here: a chunk as large as a small
    data set gives nearly the same batches every epoch, which stalled a CoLA run, docs/finetuning.md):
    cut the shuffled order into chunks of ``chunk_batches`` batches,
    sort each chunk by length (longest first, stable), cut it into batches and shuffle those batches
    inside the chunk (so the steps do not run long-to-short). Only the positions change: every id of
    ``order`` is there exactly once, and a last, partial batch stays last (the step layout of
    ``BatchSource`` is unchanged).
    """
    chunk = batch_size * chunk_batches
    out = []
    for start in range(0, len(order), chunk):
        ids = order[start:start + chunk]
        ids = ids[np.argsort(-lengths[ids], kind="stable")]
        full = len(ids) // batch_size
        batches = [ids[i * batch_size:(i + 1) * batch_size] for i in range(full)]
        batches = [batches[i] for i in rng.permutation(full)]
        if len(ids) > full * batch_size:  # only the last chunk can end with a partial batch
            batches.append(ids[full * batch_size:])
        out.extend(batches)
    return np.concatenate(out) if out else order


class LengthGroupedBatchSource(BatchSource):
    """A ``BatchSource`` whose global batches hold examples of similar length (``group_by_length``):
    less padding, same examples per epoch, order still a pure function of ``(seed, epoch)`` (exact
    resume). ``lengths[i]``: the token count of example ``i`` (the padded width it would need)."""

    def __init__(self, objective: Objective, dataset: Any, *, lengths: Sequence[int], chunk_batches: int = 8,
                 **options: Any) -> None:
        super().__init__(objective, dataset, **options)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) != self.examples_per_epoch:
            raise DataError(f"{len(self.lengths)} lengths for {self.examples_per_epoch} examples")
        self.chunk_batches = chunk_batches
        self._grouped_epoch: int | None = None
        self._grouped: np.ndarray | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._grouped_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x1E6647])
            self._grouped = group_by_length(super().order(epoch), self.lengths, batch_size=self.global_batch,
                                            chunk_batches=self.chunk_batches, rng=rng)
            self._grouped_epoch = epoch
        assert self._grouped is not None
        return self._grouped


# metric -> the count it is an average over (weights when reducing over batches)
METRIC_WEIGHTS: dict[str, str] = {
    "mlm_loss": "masked_tokens", "mlm_accuracy": "masked_tokens",
    "nsp_loss": "pairs", "nsp_accuracy": "pairs", "sop_loss": "pairs", "sop_accuracy": "pairs",
    "clm_loss": "predicted_tokens", "loss": "weight",
    # rtd: the discriminator's over every real token; precision / recall over predicted / true replacements
    "disc_loss": "tokens", "disc_accuracy": "tokens", "replaced_fraction": "tokens",
    "disc_precision": "predicted_replaced", "disc_recall": "replaced",
}
COUNT_METRICS = frozenset({"masked_tokens", "pairs", "tokens", "predicted_tokens", "weight", "replaced",
                           "predicted_replaced"})


def reduce_metrics(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Combine per-batch metrics into one dict of floats: counts add, averages weight by their count.

    Use it for gradient-accumulation micro-batches and for a validation pass.
    """
    if not items:
        return {}
    out: dict[str, float] = {}
    keys = {k for item in items for k in item}
    for key in keys:
        values = [float(item[key]) for item in items if key in item]
        if key in COUNT_METRICS:
            out[key] = sum(values)
            continue
        weight_key = METRIC_WEIGHTS.get(key)
        weights = [float(item.get(weight_key, 1.0)) if weight_key else 1.0 for item in items if key in item]
        total = sum(weights)
        if weight_key and not total:  # an average over nothing (no predicted replacement yet): left out
            continue
        out[key] = sum(v * w for v, w in zip(values, weights)) / total if total else float("nan")
    return out
