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
from lmforge.nn.attention.cpu_fastpath import (Rows, _Dense, explicit_attention, folds_one_query, one_query_attention,
                                               packed_attention, packed_sdpa, packed_sdpa_upto, packs_attention,
                                               project_rows, qkv_weights, uses_cpu_fastpath, varlen_attention,
                                               varlen_from, varlen_sdpa)


@dataclass
class Unpadding:
    """Where the N real tokens of a (B, T) batch sit: ``index`` (N,) flat positions in B * T."""

    index: torch.Tensor
    batch: int
    length: int
    causal: bool = False  # a decoder's batch: each token attends to its own sequence's tokens up to itself
    # for the CPU cores only (on other devices None: finding them would cost device syncs)
    rows: Rows | None = None  # (sequence, position) of each real token, for packed_attention
    pads: Rows | None = None  # the padded (sequence, position)s; None: no padding
    lengths: list[int] | None = None  # real tokens of each sequence, for varlen_attention / varlen_sdpa


def unpadding(attention_mask: torch.Tensor, *, causal: bool = False) -> Unpadding:
    """The real positions of ``attention_mask`` (B, T), 1 = real token; ``causal`` for a decoder."""
    B, T = attention_mask.shape
    real = attention_mask.reshape(-1) != 0
    index = real.nonzero().squeeze(1)  # (N,)
    if attention_mask.device.type != "cpu":
        return Unpadding(index=index, batch=B, length=T, causal=causal)
    pad = (~real).nonzero().squeeze(1)
    return Unpadding(index=index, batch=B, length=T, causal=causal, rows=(index // T, index % T),
                     pads=(pad // T, pad % T) if pad.numel() else None, lengths=real.view(B, T).sum(1).tolist())


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
        if (where.lengths is not None and explicit and packs_attention(x)
                and T < varlen_from(torch.get_num_threads())):  # CPU training, attention dropout, short batch
            # the unscaled projection: 1/sqrt(hs) goes into the score product (baddbmm's alpha) for free
            qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
            return attn.out(packed_attention(qkv, rows=where.rows, pads=where.pads, dense_mask=dense_mask,
                                             batch=B, length=T, heads=nh, p=attn.dropout_p, qscale=attn.scale))
        qkv = F.linear(x, *qkv_weights(attn, True)) if explicit else attn.qkv(x)  # int8 / bf16: its own kernel
        if where.lengths is not None and explicit and packs_attention(qkv):  # CPU training, attention dropout
            return attn.out(varlen_attention(qkv, lengths=where.lengths, heads=nh, causal=where.causal,
                                             p=attn.dropout_p))
        if where.lengths is not None and not explicit and not torch.is_grad_enabled() and not (
                attn.training and attn.dropout_p):  # CPU inference
            if T <= packed_sdpa_upto(torch.get_num_threads()):
                return attn.out(packed_sdpa(qkv, rows=where.rows, pads=where.pads, dense_mask=dense_mask, batch=B,
                                            length=T, heads=nh, scale=attn.scale))
            return attn.out(varlen_sdpa(qkv, lengths=where.lengths, heads=nh, causal=where.causal,
                                        scale=attn.scale))
        full = qkv.new_zeros(B * T, 3 * H).index_copy(0, where.index, qkv)  # (B * T, 3H)
        q, k, v = full.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
    else:
        if is_causal:
            raise InputError("attention for selected query rows supports bidirectional (encoder) models only.")
        q_len = 1
        if folds_one_query(attn, dense_mask, B, T):
            xk = x.new_zeros(B * T, x.size(-1)).index_copy(0, where.index, x).view(B, T, x.size(-1))
            return attn.out(one_query_attention(attn, x.index_select(0, query_rows), xk, dense_mask))
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
