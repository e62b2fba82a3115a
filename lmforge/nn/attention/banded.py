"""Locally banded causal attention: each query sees the ``attention_window`` most recent keys, itself included.

GPT-3 "alternating dense and locally banded sparse attention patterns in the layers of the transformer, similar
to the Sparse Transformer" (Brown et al. 2020, section 2.1) without giving the band; GPT-Neo, the open
reproduction, alternates global and local layers with a 256-key window: HF ``models/gpt_neo/modeling_gpt_neo.py``
(``GPTNeoSelfAttention``: ``bias ^ tril(bias, -window_size)``, so key j is seen from query i when
i - window < j <= i, counted in key columns). ``attention_pattern: ["dense", "banded"]`` gives that stack;
the GPT-Neo adapter (models/hf/gpt_neo.py) is the parity reference.

Without a cache the sequence is cut into chunks of ``window`` queries; a chunk attends to its own keys and the
previous chunk's (2 x window keys under a fixed band mask), so time and memory grow linearly with the length
(``sparse.blocks_attention``). With a KV cache a step attends to the cache's last ``window`` columns only; the
preallocated ``KVCache`` then keeps its full buffer (positions, beam reordering and the static decode step rely
on it) while a tuple cache stays the contract's (B, nh, T_past, hs).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.nn.attention.cache import LayerSlot, StaticSlot
from lmforge.nn.attention.cpu_fastpath import gather_rows
from lmforge.nn.attention.dense import KV, AttentionMask, DenseAttention
from lmforge.nn.attention.sparse import BlockPattern, blocks_attention, flex_block_mask, pad_length, run_flex


def band_mask(queries: int, keys: int, window: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """(queries, keys) bool: the last ``queries`` of ``keys`` positions, each seeing itself and the window - 1
    keys before it (HF GPT-Neo's local mask, bottom-right aligned like its ``bias[.., S - T:S, :S]``)."""
    i = torch.arange(keys - queries, keys, device=device)[:, None]
    j = torch.arange(keys, device=device)[None, :]
    return (j <= i) & (j > i - window)


def banded_pattern(length: int, window: int) -> BlockPattern:
    """Chunks of ``window`` queries over their own and the previous chunk's keys (``length`` a multiple)."""
    nb = length // window
    rows = torch.arange(nb)
    slots = torch.stack([(rows - 1).clamp(min=0), rows], dim=-1)[None]  # (1, nb, 2)
    valid = torch.stack([rows > 0, torch.ones(nb, dtype=torch.bool)], dim=-1)[None]
    # query q of a chunk, key j of the (previous, own) slab: key position - query position = j - window - q
    q = torch.arange(window)[:, None]
    j = torch.arange(2 * window)[None, :]
    token_mask = (j > q) & (j <= q + window)  # (window, 2 * window)
    return BlockPattern(window, nb, (), rows, slots, valid, token_mask)


class BandedAttention(DenseAttention):
    """``attention_kind="banded"``: DenseAttention's parameters, a causal window of ``attention_window`` keys."""

    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        super().__init__(config, layer=layer)
        self.config = config
        self.window = config.attention_window
        self._patterns: dict[tuple[int, str], BlockPattern] = {}

    def impl(self, x: torch.Tensor, output_attentions: bool) -> str:
        impl = self.config.sparse_impl
        if output_attentions:
            return "mask"
        if impl == "auto":
            return "flex" if x.device.type == "cuda" else "blocks"
        return impl

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | LayerSlot | None = None,
                use_cache: bool = False, output_attentions: bool = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        B, T, H = x.shape
        nh, hs, w = self.num_heads, self.head_size, self.window
        inner = nh * hs  # = H unless head pruning narrowed this layer
        q, k, v = self.qkv(x).split(inner, dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        present = None
        if past is not None or use_cache:
            if isinstance(past, LayerSlot):
                k, v = past.update(k, v)  # (B, nh, S, hs): the whole buffer for a StaticSlot
            else:
                if past is not None:
                    k = torch.cat([past[0], k], dim=2)  # (B, nh, S, hs)
                    v = torch.cat([past[1], v], dim=2)
                present = (k, v) if use_cache else None
            y, probs = self._cached(q, k, v, mask, past, output_attentions)
        elif T <= w or self.impl(x, output_attentions) == "mask":
            allowed = band_mask(T, T, w, device=x.device)[None, None]  # (1, 1, T, T)
            y, probs = self._dense(q, k, v, allowed, mask, output_attentions)
        else:
            key_padding = mask.key_padding  # (B, T) True = real
            impl = self.impl(x, output_attentions)
            if impl == "flex":
                y = self._flex(q, k, v, key_padding)
            else:
                Tp = pad_length(T, w)
                if Tp != T:  # pad keys sit after every real query: the causal band never reaches them
                    q, k, v = (F.pad(t, (0, 0, 0, Tp - T)) for t in (q, k, v))
                    if key_padding is not None:
                        key_padding = F.pad(key_padding, (0, Tp - T), value=False)
                y = blocks_attention(q, k, v, self.pattern(Tp, x.device), key_padding=key_padding,
                                     scale=self.scale, dropout_p=self.dropout_p if self.training else 0.0)[:, :, :T]
            probs = None
        y = y.transpose(1, 2).reshape(B, T, inner)  # (B, T, nh * hs)
        if query_index is not None:
            y = gather_rows(y, query_index)
        return self.out(y), present, probs

    def pattern(self, length: int, device: torch.device) -> BlockPattern:
        key = (length, str(device))
        if key not in self._patterns:
            self._patterns[key] = banded_pattern(length, self.window).to(device)
        return self._patterns[key]

    def _dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, mask: AttentionMask,
               output_attentions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SDPA (or the explicit softmax, for the maps) under ``allowed`` (.., T, S) and the key padding."""
        if mask.key_padding is not None:
            allowed = allowed & mask.key_padding[:, None, None, -allowed.size(-1):]
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # a row of pads only: see all (never read)
        if not output_attentions:
            p = self.dropout_p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p, scale=self.scale), None
        scores = (q @ k.transpose(-2, -1)) * self.scale
        probs = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(dim=-1)
        return self.dropout(probs) @ v, probs

    def _cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, past: Any,
                output_attentions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of T new queries over S cached + new keys: only the last T + window - 1 columns can be seen."""
        T, S, w = q.size(2), k.size(2), self.window
        if isinstance(past, StaticSlot):  # the fixed-shape decode step: one query at column ``index``
            cols = torch.arange(S, device=q.device)
            allowed = (cols <= past.index) & (cols > past.index - w)  # (S,)
            allowed = allowed[None, None, None, :] & mask.dense  # (B, 1, 1, S) key mask of the static cache
            return self._dense(q, k, v, allowed, AttentionMask(None, False), output_attentions)
        first = max(S - T - w + 1, 0)  # earlier columns are outside every new query's window
        k, v = k[:, :, first:], v[:, :, first:]
        allowed = band_mask(T, S - first, w, device=q.device)[None, None]
        if mask.dense is not None:  # (B, 1, T|1, S): padding (and causality) of the body's mask
            allowed = allowed & mask.dense[..., first:]
        return self._dense(q, k, v, allowed, AttentionMask(None, False), output_attentions)

    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding: torch.Tensor | None) -> torch.Tensor:
        T, w = q.size(2), self.window
        bs = 128 if T >= 128 else T  # flex's default tile
        nbq = pad_length(T, bs) // bs
        qb = torch.arange(nbq, device=q.device)[:, None]
        kb = torch.arange(nbq, device=q.device)[None, :]
        # key block kb holds a key some query of block qb sees: kb <= qb and its last key > first query - w
        table = (kb <= qb) & ((kb + 1) * bs - 1 > qb * bs - w)

        if key_padding is None:
            def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return (kv_idx <= q_idx) & (kv_idx > q_idx - w)
        else:
            def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return (kv_idx <= q_idx) & (kv_idx > q_idx - w) & key_padding[b, kv_idx]
        block_mask = flex_block_mask(table[None], block_size=bs, seq_len=T, mask_mod=mask_mod,
                                     batch=q.size(0) if key_padding is not None else 1)
        return run_flex(q, k, v, block_mask, scale=self.scale)
