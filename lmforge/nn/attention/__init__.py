"""Attention kinds: ``ATTENTION_KINDS[kind](config, layer=i)`` builds stored layer i's attention module (its kind
is ``config.layer_attention_kind(i)``, so ``attention_pattern`` can mix kinds). Every kind has the same signature,
so the block does not know which one it runs:

    forward(x (B, T, H), *, mask: AttentionMask, past: (k, v) | LayerSlot | None, use_cache: bool,
            output_attentions: bool) -> (out (B, T, H), present (k, v) | None, probs (B, nh, T, S) | None)

and the same parameter names (``qkv`` fused (3H, H), ``out`` (H, H)), so checkpoints do not depend on the
kind: "dense" (``dense.py``), "bigbird" (block-sparse encoder attention, ``bigbird.py``), "banded" (a local causal
window, ``banded.py``), Reformer's "local" and "lsh" (``reformer.py``; "lsh" has a shared ``qk`` and a ``v``
projection instead of ``qkv``); the sparse kinds share ``sparse.py``. ``past`` is a ``LayerSlot`` of a preallocated
``KVCache`` when the body runs with one: the layer writes its new keys / values into it in place and returns no
``present``.
"""
from __future__ import annotations

from torch import nn

from lmforge.nn.attention.banded import BandedAttention
from lmforge.nn.attention.bigbird import BigBirdAttention
from lmforge.nn.attention.cache import KVCache, LayerSlot
from lmforge.nn.attention.dense import AttentionMask, DenseAttention
from lmforge.nn.attention.reformer import LocalAttention, LSHAttention
from lmforge.nn.registry import Registry

ATTENTION_KINDS: Registry[type[nn.Module]] = Registry("attention_kind", {
    "dense": DenseAttention,
    "bigbird": BigBirdAttention,
    "banded": BandedAttention,
    "local": LocalAttention,  # Reformer's chunked local attention (reformer.py)
    "lsh": LSHAttention,  # Reformer's locality-sensitive-hashing attention (reformer.py; own qk / v parameters)
})

__all__ = ["ATTENTION_KINDS", "AttentionMask", "BandedAttention", "BigBirdAttention", "DenseAttention", "KVCache",
           "LSHAttention", "LayerSlot", "LocalAttention"]
