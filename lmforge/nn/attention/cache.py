"""A preallocated KV cache: per layer one K and one V buffer (B, nh, capacity, hs), written in place; and
``StaticKVCache``, its zeroed, key-masked form for the fixed-shape decode step (``lmforge.generation.static``).

The tuple cache of the model contract (per layer ``(k, v)`` of shape (B, nh, T_past, hs)) grows by
``torch.cat`` every step, which copies the whole cache of every layer once per token (the cost:
docs/generation.md). ``KVCache`` is passed as ``past_key_values`` instead: each layer writes its new keys /
values into the next free columns and attends over a view of the filled part, so a decode step copies only
the new token's K / V. Generation uses it; the tuple form stays for callers that build caches themselves.

Reading ``cache[i]`` gives layer i's filled ``(k, v)`` views, so code written for the tuple form (shape
checks, ``len(cache)``) keeps working.
"""
from __future__ import annotations

from typing import Any

import torch

from lmforge.errors import InputError

KV = tuple[torch.Tensor, torch.Tensor]


class KVCache:
    """K / V buffers for ``num_layers`` applied layers (ALBERT-style sharing still has one slot per
    applied layer). ``length`` columns are filled; the body advances it once per forward, after every
    layer has written its ``T`` new columns at ``[length, length + T)``."""

    def __init__(self, *, num_layers: int, batch: int, num_heads: int | list[int], head_size: int, capacity: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        """``num_heads``: one count for every layer, or one per applied layer (a head-pruned model)."""
        heads = num_heads if isinstance(num_heads, list) else [num_heads] * num_layers
        shapes = [(batch, n, capacity, head_size) for n in heads]
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for shape in shapes]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for shape in shapes]
        self.capacity = capacity
        self.length = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, *, batch: int, capacity: int) -> KVCache:
        """A cache shaped for ``model`` (a lmforge Model or Transformer body), on its device and dtype."""
        c = model.config
        weight = next(model.parameters())
        return cls(num_layers=c.num_layers, batch=batch, num_heads=applied_heads(c), head_size=c.head_size,
                   capacity=capacity, dtype=weight.dtype, device=weight.device)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer: int) -> KV:
        return self.keys[layer][:, :, :self.length], self.values[layer][:, :, :self.length]

    def check_room(self, new: int) -> None:
        """InputError when ``new`` more tokens would not fit (before any layer writes)."""
        if self.length + new > self.capacity:
            raise InputError(f"the KV cache holds {self.capacity} positions and {self.length} are used; "
                             f"{new} more do not fit: build it with a larger capacity.")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> KV:
        """Write layer ``layer``'s new (B, nh, T, hs) keys / values after the filled part; return the views
        (B, nh, length + T, hs) that attention reads (strided views: nothing is copied)."""
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, new: int) -> None:
        self.length += new

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B,) of every layer (beam search following its surviving beams). New buffers
        (one copy); ``StaticKVCache`` reorders in place instead, for its CUDA graph."""
        for buffers in (self.keys, self.values):
            for i, t in enumerate(buffers):
                buffers[i] = t.index_select(0, index)


def applied_heads(config: Any) -> list[int]:
    """Heads of each applied layer (ALBERT-style sharing repeats a stored layer's count)."""
    return [config.heads_in_layer(config.layer_index(i)) for i in range(config.num_layers)]


class StaticKVCache(KVCache):
    """A zeroed ``KVCache`` plus the key mask (B, capacity) of the filled columns (False = never attended:
    a left pad or a column not written yet). Zeroed: a masked column's probability is 0, but 0 x NaN from
    uninitialised memory would still be NaN. Beam search reorders both, in place."""

    def __init__(self, **shape: Any) -> None:
        super().__init__(**shape)
        for t in (*self.keys, *self.values):
            t.zero_()
        batch = self.keys[0].shape[0]
        self.keys_mask = torch.zeros((batch, self.capacity), dtype=torch.bool, device=self.keys[0].device)

    def reorder(self, index: torch.Tensor) -> None:
        """In place: the buffers keep their storage, which the captured CUDA graph of the step points at."""
        for t in (*self.keys, *self.values, self.keys_mask):
            t.copy_(t.index_select(0, index))


class LayerSlot:
    """What one layer receives as ``past`` when the body runs with a ``KVCache``: the cache and its index."""

    __slots__ = ("cache", "layer")

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache = cache
        self.layer = layer

    def update(self, k: torch.Tensor, v: torch.Tensor) -> KV:
        return self.cache.update(self.layer, k, v)


class StaticSlot(LayerSlot):
    """``past`` of one layer in the fixed-shape decode step (``lmforge.generation.static``): the new token's
    K / V go to column ``index`` (a (1,) tensor, so the step's code is the same at every position) and
    attention reads the whole buffer (B, nh, capacity, hs); the key mask hides the columns not filled yet."""

    __slots__ = ("index",)

    def __init__(self, cache: KVCache, layer: int, index: torch.Tensor) -> None:
        super().__init__(cache, layer)
        self.index = index

    def update(self, k: torch.Tensor, v: torch.Tensor) -> KV:
        keys, values = self.cache.keys[self.layer], self.cache.values[self.layer]
        keys.index_copy_(2, self.index, k)  # (B, nh, 1, hs) into column index
        values.index_copy_(2, self.index, v)
        return keys, values
