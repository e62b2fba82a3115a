"""Length-grouped training batches (``LengthGroupedBatchSource``, fine-tuning's default): every example
exactly once per epoch, similar lengths inside a batch, the order a pure function of (seed, epoch)."""
from __future__ import annotations

import numpy as np

from lmforge.objectives.base import BatchSource, LengthGroupedBatchSource, group_by_length


class _Items:
    name, seq_len = "items", 0

    def examples(self, data):
        return self

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def example(self, index: int, *, seed: int, epoch: int) -> int:
        return index

    def collate(self, items):
        return {"ids": np.asarray(items)}


def _source(n: int, lengths, *, batch_size: int = 8, seed: int = 0, cls=LengthGroupedBatchSource, **kw):
    extra = {"lengths": lengths, "chunk_batches": 4} if cls is LengthGroupedBatchSource else {}
    return cls(_Items(n), None, batch_size=batch_size, seed=seed, drop_last=False, **extra, **kw)


def _padded_tokens(source, lengths) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in (source.batch(0, s)["ids"] for s in range(len(source))))


def test_every_example_exactly_once_per_epoch_and_less_padding() -> None:
    rng = np.random.default_rng(0)
    n = 203  # not a multiple of the batch: the partial batch must stay last
    lengths = rng.integers(3, 120, n)
    grouped = _source(n, lengths)
    for epoch in range(3):
        seen = np.concatenate([grouped.batch(epoch, s)["ids"] for s in range(len(grouped))])
        assert sorted(seen.tolist()) == list(range(n))  # each once
        assert len(grouped.batch(epoch, len(grouped) - 1)["ids"]) == n % 8  # the partial batch last
    assert len(grouped) == len(_source(n, lengths, cls=BatchSource))  # the same steps per epoch
    plain = _source(n, lengths, cls=BatchSource)
    assert _padded_tokens(grouped, lengths) < 0.75 * _padded_tokens(plain, lengths)


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    lengths = np.arange(100) % 17
    a, b = _source(100, lengths, seed=3), _source(100, lengths, seed=3)
    assert np.array_equal(a.order(1), b.order(1))  # a resumed run seeks to the same batches
    assert not np.array_equal(a.order(0), a.order(1))  # each epoch is shuffled anew
    assert not np.array_equal(a.order(0), _source(100, lengths, seed=4).order(0))


def test_group_by_length_sorts_within_chunks_only() -> None:
    order = np.random.default_rng(1).permutation(64)
    lengths = np.random.default_rng(2).integers(1, 50, 64)
    out = group_by_length(order, lengths, batch_size=4, chunk_batches=4, rng=np.random.default_rng(0))
    for start in range(0, 64, 16):  # a chunk keeps its examples; its batches are length-sorted runs
        assert sorted(out[start:start + 16].tolist()) == sorted(order[start:start + 16].tolist())
        chunk = sorted(lengths[order[start:start + 16]].tolist(), reverse=True)
        runs = sorted([sorted(lengths[out[i:i + 4]].tolist(), reverse=True)
                       for i in range(start, start + 16, 4)], reverse=True)
        assert [x for r in runs for x in r] == chunk


def test_rank_slices_cover_each_global_batch() -> None:
    lengths = np.random.default_rng(3).integers(1, 64, 96)
    ranks = [LengthGroupedBatchSource(_Items(96), None, batch_size=4, seed=0, rank=r, world_size=2, lengths=lengths)
             for r in range(2)]
    for step in range(len(ranks[0])):
        both = np.concatenate([src.batch(0, step)["ids"] for src in ranks])
        assert np.array_equal(both, ranks[0].order(0)[step * 8:(step + 1) * 8])
