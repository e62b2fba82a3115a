"""Dense multi-head self-attention through ``scaled_dot_product_attention`` (and an explicit softmax path
when the attention maps are asked for), with an optional KV cache."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.attention.cache import LayerSlot
from lmforge.nn.attention.cpu_fastpath import fastpath_attention, uses_cpu_fastpath
from lmforge.nn.attention.unpadded import Unpadding, unpadded_attention

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class AttentionMask:
    """What a layer may attend to, computed once per forward by the body.

    ``dense`` is None when nothing is masked beyond ``is_causal`` (no padding: SDPA's fast paths);
    otherwise a bool tensor broadcastable to (B, nh, T, S), True = attend. ``key_padding`` (B, S), True = real
    token, is kept for kinds that build their own masks (block-sparse attention).
    """

    dense: torch.Tensor | None
    is_causal: bool
    key_padding: torch.Tensor | None = None
    unpadded: Unpadding | None = None  # set: the layers see the real tokens only, x (N, H) (attention/unpadded.py)


class DenseAttention(nn.Module):
    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        """``layer``: the stored layer; head pruning may leave it fewer than ``config.num_heads`` heads
        (``config.heads_in_layer``; the head size stays ``config.head_size``, so the projections narrow)."""
        super().__init__()
        self.num_heads = config.heads_in_layer(layer)
        self.head_size = config.head_size
        inner = self.num_heads * self.head_size  # = hidden_size unless pruned
        # the factor on q.k: SDPA's default 1 / sqrt(hs) unless the config sets one (GPT-Neo: 1.0)
        self.scale = config.attention_scale if config.attention_scale is not None else 1.0 / math.sqrt(self.head_size)
        # q, k, v fused in that order
        self.qkv = nn.Linear(config.hidden_size, 3 * inner, bias=config.qkv_bias)
        self.out = nn.Linear(inner, config.hidden_size, bias=config.attention_out_bias)
        self.dropout_p = config.attention_dropout
        self.dropout = nn.Dropout(config.attention_dropout)

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | LayerSlot | None = None,
                use_cache: bool = False,
                output_attentions: bool | str = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        if mask.unpadded is not None:  # x is (N, H), the batch's real tokens (the body's padding_free mode)
            return unpadded_attention(self, x, where=mask.unpadded, dense_mask=mask.dense,
                                      is_causal=mask.is_causal, query_rows=query_index), None, None
        if past is None and not use_cache and not output_attentions and (
                query_index is not None or uses_cpu_fastpath(self, x)):  # see attention/cpu_fastpath.py
            return fastpath_attention(self, x, dense_mask=mask.dense, is_causal=mask.is_causal,
                                      query_index=query_index), None, None
        B, T, _ = x.shape
        nh, hs = self.num_heads, self.head_size
        inner = nh * hs
        q, k, v = self.qkv(x).split(inner, dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        if isinstance(past, LayerSlot):  # preallocated cache: write the new columns in place, read a view
            k, v = past.update(k, v)  # (B, nh, S, hs), S = T_past + T
            present = None  # the cache object itself is the state
        else:
            if past is not None:
                k = torch.cat([past[0], k], dim=2)  # (B, nh, S, hs), S = T_past + T
                v = torch.cat([past[1], v], dim=2)
            present = (k, v) if use_cache else None
        probs = None
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, nh, T, S)
            raw = scores  # output_attentions="scores": the pre-softmax maps, unmasked (TinyBERT's loss reads them)
            allowed = mask.dense
            if mask.is_causal:
                allowed = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            y = self.dropout(probs) @ v  # (B, nh, T, hs)
            if output_attentions == "scores":
                probs = raw
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense,
                                               dropout_p=self.dropout_p if self.training else 0.0,
                                               is_causal=mask.is_causal, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, T, inner)  # (B, T, nh * hs)
        return self.out(y), present, probs
