"""The CPU training fast path of dense attention, and attention for selected query rows only.

Why it exists: pre-training on CPU is a first-class use (``lmforge quickstart``), and there SDPA cannot
use its fused kernel once attention dropout is on. It falls back to its math path: three ``.contiguous()``
copies of q / k / v, q and k each scaled, a "safe" softmax (softmax + isneginf + all + where),
``bernoulli_`` + ``div_`` + ``mul`` for the dropout. ``DenseAttention.forward`` sends two cases here (no KV
cache and no attention maps in either):

* training with attention dropout on CPU (``uses_cpu_fastpath``). One copy lays q / k / v out head-major,
  1/sqrt(hs) is folded into the q rows of the projection weight (3H x H numbers instead of B x T x H), a
  plain softmax (the body never builds a fully masked row), and the cheaper mask of ``lmforge.nn.dropout``;
  the padding mask as an additive bias of ``baddbmm``, and the (B * nh, T, T) maps in chunks of at most
  ``CHUNK_BYTES`` (``explicit_attention``, which the padding-free layers share). Same function, same dropout
  distribution; the measurements are in docs/pretraining.md and docs/finetuning.md.
* ``query_index`` (B, M): only the outputs at those positions are wanted (the last layer of an MLM
  model in training, where only the ~15% masked positions reach the loss). Keys and values are
  projected for every position, queries only for those M; the result is (B, M, H). Off the CPU this
  case still ends in SDPA.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import InputError
from lmforge.nn.dropout import apply_keep, keep_mask, keep_scale


class _Dense(Protocol):  # the DenseAttention attributes used here (no import cycle)
    num_heads: int
    head_size: int
    scale: float
    dropout_p: float
    training: bool
    qkv: nn.Linear
    out: nn.Linear


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, H), index (B, M) -> (B, M, H): the rows at ``index`` of each sequence. Padding-free layers
    (x (N, H), the real tokens) take index (M,), row numbers in N -> (M, H)."""
    if x.dim() == 2:
        return x.index_select(0, index)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(-1)))


def uses_cpu_fastpath(attn: _Dense, x: torch.Tensor) -> bool:
    """True where SDPA would take its math path for dropout (CPU, training, p > 0)."""
    return attn.training and attn.dropout_p > 0 and x.device.type == "cpu"


def qkv_weights(attn: _Dense, explicit: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fused q / k / v projection's (weight, bias); on the explicit path with 1/sqrt(hs) folded into the q
    rows of the (3H, H) weight: 3H x H multiplications, not B x T x H."""
    w, b = attn.qkv.weight, attn.qkv.bias
    if explicit:
        H = attn.num_heads * attn.head_size
        qscale = torch.ones(3 * H, 1, dtype=w.dtype, device=w.device)
        qscale[:H] = attn.scale
        w, b = w * qscale, None if b is None else b * qscale[:, 0]
    return w, b


def project_rows(attn: _Dense, x: torch.Tensor, rows: torch.Tensor, explicit: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(q of the rows at ``rows`` (as ``gather_rows``), k / v of every row of ``x``): the queries are projected for
    those rows only where the weight is a float matrix to slice; an int8 / bf16 projection from `lmforge
    compress` runs its own kernel over every row and the q rows are picked after."""
    H = attn.num_heads * attn.head_size
    if explicit or type(attn.qkv) is nn.Linear:
        w, b = qkv_weights(attn, explicit)
        q = F.linear(gather_rows(x, rows), w[:H], None if b is None else b[:H])
        return q, F.linear(x, w[H:], None if b is None else b[H:])
    qkv = attn.qkv(x)
    return gather_rows(qkv[..., :H], rows), qkv[..., H:]


def fastpath_attention(attn: _Dense, x: torch.Tensor, *, dense_mask: torch.Tensor | None, is_causal: bool,
                       query_index: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention output (B, T, H), or (B, M, H) at ``query_index``; ``dense_mask`` True = attend."""
    B, T, _ = x.shape
    nh, hs = attn.num_heads, attn.head_size
    H = nh * hs  # the projections' inner width (the model width unless heads were pruned)
    explicit = uses_cpu_fastpath(attn, x)
    if query_index is None:
        q_rows = T
        qkv = F.linear(x, *qkv_weights(attn, explicit))  # (B, T, 3H)
        q, k, v = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
    else:
        if is_causal:
            raise InputError("attention for selected query rows supports bidirectional (encoder) models only.")
        q_rows = query_index.size(1)
        q, kv = project_rows(attn, x, query_index, explicit)  # (B, M, H), (B, T, 2H)
        k, v = kv.reshape(B, T, 2, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
        q = q.view(B, q_rows, nh, hs).transpose(1, 2).contiguous()  # (B, nh, M, hs)
    if not explicit:  # e.g. on GPU: SDPA's fused kernels handle dropout themselves
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask, is_causal=is_causal,
                                           dropout_p=attn.dropout_p if attn.training else 0.0, scale=attn.scale)
        return attn.out(y.transpose(1, 2).reshape(B, q_rows, H))
    q3, k3, v3 = q.reshape(B * nh, q_rows, hs), k.reshape(B * nh, T, hs), v.reshape(B * nh, T, hs)
    if is_causal:
        dense_mask = torch.ones(q_rows, T, dtype=torch.bool, device=x.device).tril()
    y = explicit_attention(q3, k3, v3, batch=B, dense_mask=dense_mask, p=attn.dropout_p)  # (B * nh, M, hs)
    y = y.view(B, nh, q_rows, hs).transpose(1, 2).reshape(B, q_rows, H)  # (B, M, H)
    return attn.out(y)


# glibc's malloc hands out blocks above its largest mmap threshold (32 MiB) as fresh mmapped pages, which the
# kernel page-faults and zeroes on every use: at 16 x 4 heads x 384^2 one (B * nh, T, T) float map is 38 MB,
# and those faults were ~40% of the attention's time. Maps of at most this size are recycled from the heap.
# 8 MiB rather than 16: a chunk's scores -> softmax -> dropout passes then stay in the last-level cache more
# often (attention sublayer, 16 x 4 heads, forward + backward: T = 256 77 -> 70 ms, T = 384 153 -> 150 ms; a
# squad300 run ~1 % faster; docs/finetuning.md, "Long windows").
CHUNK_BYTES = 8 * 2 ** 20


def _mask_bias(dense_mask: torch.Tensor, batch: int, heads: int, dtype: torch.dtype,
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dense_mask`` (True = attend, broadcastable to (B, nh, M, T)) as (bias, fill): an additive 0 / min
    bias (1, M, T) or (B * nh, 1, T) that baddbmm broadcasts, or else a bool (B * nh, M, T) to fill."""
    m = dense_mask[(None,) * (4 - dense_mask.dim())]  # (B | 1, nh | 1, M | 1, T)
    low = torch.finfo(dtype).min
    if m.size(0) == 1 and m.size(1) == 1:  # one mask for every sequence (causal)
        return torch.zeros(m.shape[2:], dtype=dtype, device=m.device).masked_fill_(~m[0, 0], low)[None], None
    if m.size(2) == 1:  # keys only (padding): one row per sequence and head
        bias = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(~m, low)
        return bias.expand(batch, heads, 1, m.size(3)).reshape(batch * heads, 1, m.size(3)), None
    return None, m.expand(batch, heads, -1, -1).reshape(batch * heads, -1, m.size(3))


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, batch: int,
                       dense_mask: torch.Tensor | None, p: float) -> torch.Tensor:
    """dropout(softmax(q k^T masked)) v with the cheap dropout mask: q (B * nh, M, hs) already scaled, k / v
    (B * nh, T, hs) -> (B * nh, M, hs); ``dense_mask`` True = attend, broadcastable to (B, nh, M, T).

    The mask enters as an additive 0 / min bias of ``baddbmm`` (no masked_fill pass over the map, none in
    backward; softmax gives the masked keys exactly 0 either way). Rows of B * nh go in chunks whose (c, M, T)
    maps stay within CHUNK_BYTES: each row is independent, so this is the same function."""
    BH, M, _ = q.shape
    T = k.size(1)
    bias = fill = None
    if dense_mask is not None:
        bias, fill = _mask_bias(dense_mask, batch, BH // batch, q.dtype)
    per = max(1, CHUNK_BYTES // (M * T * q.element_size()))
    chunks = -(-BH // per)
    size = -(-BH // chunks)  # equal chunks
    scale = keep_scale(p)
    out = []
    for i in range(0, BH, size):
        j = min(i + size, BH)
        kt = k[i:j].transpose(1, 2)
        if bias is not None:
            scores = torch.baddbmm(bias if bias.size(0) == 1 else bias[i:j], q[i:j], kt)  # (c, M, T)
        else:
            scores = torch.bmm(q[i:j], kt)
            if fill is not None:  # in place on bmm's own output: autograd keeps no copy of it
                scores = scores.masked_fill_(~fill[i:j], torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        probs = apply_keep(probs, keep_mask(probs, p), scale)  # attention dropout
        out.append(torch.bmm(probs, v[i:j]))
    return out[0] if len(out) == 1 else torch.cat(out)
