"""Padding-free ("unpadded") encoder layers: a batch of mostly short sequences costs its real tokens.

The body gathers the real tokens of a right- or left-padded batch into one (N, H) matrix before the
first layer (``unpad``), so every projection, the MLP, the LayerNorms and the dropouts run on N rows
instead of B x T. Only the attention product itself needs the (B, T) layout: ``unpadded_attention``
projects q / k / v for the N rows, scatters them into a zero (B, nh, T, hs) layout, attends under the
same mask as the padded path and gathers the N outputs back before the output projection. At the end
``repad`` puts the rows back into (B, T, H) with zeros at the padded positions (which the padded path
fills with values no loss or metric reads). Same function on every real position (tests/nn/attention/
test_unpadded.py checks logits, losses and gradients of every head); measurements in docs/finetuning.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.errors import InputError
from lmforge.nn.attention.cpu_fastpath import (Rows, _Dense, explicit_attention, packed_attention, packs_attention,
                                               project_rows, qkv_weights, uses_cpu_fastpath, varlen_attention,
                                               varlen_from, varlen_sdpa)


@dataclass
class Unpadding:
    """Where the N real tokens of a (B, T) batch sit: ``index`` (N,) flat positions in B * T."""

    index: torch.Tensor
    batch: int
    length: int
    rows: Rows | None = None  # (sequence, position) of each real token, for packed_attention
    pads: Rows | None = None  # the padded (sequence, position)s; None: no padding
    counts: torch.Tensor | None = None  # (B,) real tokens of each sequence

    def lengths(self) -> list[int]:
        """The real length of each sequence, as Python ints (read once per batch: a device sync off the CPU)."""
        if not hasattr(self, "_lengths"):
            self._lengths = self.counts.tolist()
        return self._lengths


def unpadding(attention_mask: torch.Tensor) -> Unpadding:
    """The real positions of ``attention_mask`` (B, T), 1 = real token."""
    B, T = attention_mask.shape
    real = attention_mask.reshape(-1) != 0
    index = real.nonzero().squeeze(1)  # (N,)
    if attention_mask.device.type != "cpu":  # the rows / pads / counts serve the CPU cores only (nonzero syncs a GPU)
        return Unpadding(index=index, batch=B, length=T)
    pad = (~real).nonzero().squeeze(1)
    return Unpadding(index=index, batch=B, length=T, rows=(index // T, index % T),
                     pads=(pad // T, pad % T) if pad.numel() else None,
                     counts=(attention_mask != 0).sum(1))


def unpad(x: torch.Tensor, where: Unpadding) -> torch.Tensor:
    """(B, T, ...) -> (N, ...): the rows of the real tokens."""
    return x.reshape(where.batch * where.length, *x.shape[2:]).index_select(0, where.index)


def repad(x: torch.Tensor, where: Unpadding) -> torch.Tensor:
    """(N, H) -> (B, T, H) with zeros at the padded positions."""
    full = x.new_zeros(where.batch * where.length, x.size(-1)).index_copy(0, where.index, x)
    return full.view(where.batch, where.length, x.size(-1))


def unpadded_attention(attn: _Dense, x: torch.Tensor, *, where: Unpadding, dense_mask: torch.Tensor | None,
                       is_causal: bool, query_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention of the real tokens ``x`` (N, H) -> (N, H); ``dense_mask`` True = attend, as the
    padded path's. On CPU in training with attention dropout, the explicit softmax of cpu_fastpath.py.
    ``query_rows`` (B,): one row of ``x`` per sequence (in batch order) whose output alone is wanted ->
    (B, H); every real token still serves as key and value (the [CLS] row of a classifier's last layer)."""
    B, T = where.batch, where.length
    nh, hs = attn.num_heads, attn.head_size
    H = nh * hs  # the projections' inner width (the model width unless heads were pruned)
    explicit = uses_cpu_fastpath(attn, x)
    q_len = T
    if query_rows is None:  # (N, 3H): the projection costs the real tokens only
        qkv = F.linear(x, *qkv_weights(attn, True)) if explicit else attn.qkv(x)  # int8 / bf16: its own kernel
        # a per-row mask here is the body's keys & causal one (models/transformer.py attention_mask)
        causal = is_causal or (dense_mask is not None and dense_mask.size(-2) > 1)
        if explicit and packs_attention(qkv) and where.counts is not None and T >= varlen_from(
                torch.get_num_threads()):
            return attn.out(varlen_attention(qkv, lengths=where.lengths(), heads=nh, causal=causal,
                                             p=attn.dropout_p))
        if (not explicit and x.device.type == "cpu" and where.counts is not None and not torch.is_grad_enabled()
                and not (attn.training and attn.dropout_p)):
            return attn.out(varlen_sdpa(qkv, lengths=where.lengths(), heads=nh, causal=causal, scale=attn.scale))
        if explicit and packs_attention(qkv) and where.rows is not None:
            if is_causal:
                dense_mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            return attn.out(packed_attention(qkv, rows=where.rows, pads=where.pads, dense_mask=dense_mask,
                                             batch=B, length=T, heads=nh, p=attn.dropout_p))
        full = qkv.new_zeros(B * T, 3 * H).index_copy(0, where.index, qkv)  # (B * T, 3H)
        q, k, v = full.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
    else:
        if is_causal:
            raise InputError("attention for selected query rows supports bidirectional (encoder) models only.")
        q_len = 1
        q, kv = project_rows(attn, x, query_rows, explicit)  # (B, H) for the wanted rows, (N, 2H) for every token
        full = kv.new_zeros(B * T, 2 * H).index_copy(0, where.index, kv)  # (B * T, 2H)
        k, v = full.view(B, T, 2, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
        q = q.view(B, 1, nh, hs).transpose(1, 2)  # (B, nh, 1, hs)
    if not explicit:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask, is_causal=is_causal,
                                           dropout_p=attn.dropout_p if attn.training else 0.0, scale=attn.scale)
    else:
        if is_causal:
            dense_mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = explicit_attention(q.reshape(B * nh, q_len, hs), k.reshape(B * nh, T, hs), v.reshape(B * nh, T, hs),
                               batch=B, dense_mask=dense_mask, p=attn.dropout_p).view(B, nh, q_len, hs)
    if query_rows is not None:
        return attn.out(y.reshape(B, H))  # (B, H): q_len 1, so (B, nh, 1, hs) is already (B, H) head-major
    y = y.transpose(1, 2).reshape(B * T, H).index_select(0, where.index)  # (N, H)
    return attn.out(y)
