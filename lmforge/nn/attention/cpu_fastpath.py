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
  case still ends in SDPA. With one query per sequence (a classifier's [CLS] layer, M = 1) no keys or
  values are projected at all: ``one_query_attention`` folds the projections into the query (on any
  device; the padding-free layers call it too).
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


def causal_mask(rows: int, keys: int, device: torch.device) -> torch.Tensor:
    """(rows, keys) True = attend: each query sees the keys up to its own position."""
    return torch.ones(rows, keys, dtype=torch.bool, device=device).tril()


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


def folds_one_query(attn: _Dense, dense_mask: torch.Tensor | None, batch: int, length: int) -> bool:
    """Whether ``one_query_attention`` takes this layer: a plain float q / k / v projection (fp32, or bf16 from
    `lmforge compress`; an int8 one runs its own kernel) and a keys-only mask (B | 1, 1, 1, T) or none."""
    return type(attn.qkv) is nn.Linear and attn.qkv.weight.is_floating_point() and (
        dense_mask is None or (dense_mask.dim() == 4 and dense_mask.size(0) in (1, batch)
                               and dense_mask.size(1) == 1 and dense_mask.size(2) == 1
                               and dense_mask.size(3) == length))


def one_query_attention(attn: _Dense, xq: torch.Tensor, xk: torch.Tensor, dense_mask: torch.Tensor | None,
                        ) -> torch.Tensor:
    """Attention for one query row per sequence without projecting keys and values: xq (B, D) the query rows'
    inputs, xk (B, T, D) every position's input -> (B, H), the heads' outputs before the output projection.

    With k_j = Wk_h x_j + bk_h and v_j = Wv_h x_j + bv_h per head h, a single query's
    scores q_h . k_j = (Wk_h^T q_h) . x_j + q_h . bk_h and output sum_j p_j v_j = Wv_h (sum_j p_j x_j)
    + (sum_j p_j) bv_h: the same function with a (D,) vector per head instead of a (T, H) key / value
    projection (4 D H multiply-adds per sequence instead of 2 T D H; the [CLS] layer of a classifier spends
    ~90 % less). q . bk is the same for every key, so it leaves the softmax unchanged; it is kept so that bk gets
    the (float-noise, ~0) gradient it gets on the projected path, not none. ``dense_mask`` keys only
    (``folds_one_query``), True = attend. The attention dropout acts on the probabilities, as on every path."""
    B, T, D = xk.shape
    nh, hs = attn.num_heads, attn.head_size
    H = nh * hs
    # unbind, not three slices: its backward stacks the three gradients instead of zero-filling (3H, D) for each
    wq, wk, wv = attn.qkv.weight.view(3, nh, hs, D).unbind(0)
    bq, bk, bv = (None,) * 3 if attn.qkv.bias is None else attn.qkv.bias.view(3, nh, hs).unbind(0)
    q = F.linear(xq, wq.reshape(H, D), None if bq is None else bq.reshape(H)).mul(attn.scale).view(B, nh, hs)
    qk = torch.bmm(q.transpose(0, 1), wk).transpose(0, 1)  # (B, nh, D): Wk_h^T q_h
    scores = torch.bmm(qk, xk.transpose(1, 2))  # (B, nh, T)
    if bk is not None:
        scores = scores + (q * bk).sum(-1, keepdim=True)
    if dense_mask is not None:
        scores = scores.masked_fill(~dense_mask[:, 0], torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if attn.training and attn.dropout_p > 0:
        probs = (apply_keep(probs, keep_mask(probs, attn.dropout_p), keep_scale(attn.dropout_p))
                 if probs.device.type == "cpu" else F.dropout(probs, attn.dropout_p, training=True))
    z = torch.bmm(probs, xk)  # (B, nh, D): sum_j p_j x_j per head
    y = torch.bmm(z.transpose(0, 1), wv.transpose(1, 2)).transpose(0, 1)  # (B, nh, hs)
    if bv is not None:
        y = y + probs.sum(-1, keepdim=True) * bv
    return y.reshape(B, H)


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
        if explicit and packs_attention(qkv):
            if is_causal:
                dense_mask = causal_mask(T, T, x.device)
            y = packed_attention(qkv.reshape(B * T, 3 * H), rows=None, pads=None, dense_mask=dense_mask,
                                 batch=B, length=T, heads=nh, p=attn.dropout_p)
            return attn.out(y.view(B, T, H))
        q, k, v = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
    else:
        if is_causal:
            raise InputError("attention for selected query rows supports bidirectional (encoder) models only.")
        q_rows = query_index.size(1)
        if q_rows == 1 and folds_one_query(attn, dense_mask, B, T):
            y = one_query_attention(attn, gather_rows(x, query_index)[:, 0], x, dense_mask)  # (B, H)
            return attn.out(y)[:, None]  # (B, 1, H)
        q, kv = project_rows(attn, x, query_index, explicit)  # (B, M, H), (B, T, 2H)
        k, v = kv.reshape(B, T, 2, nh, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs) each
        q = q.view(B, q_rows, nh, hs).transpose(1, 2).contiguous()  # (B, nh, M, hs)
    if not explicit:  # e.g. on GPU: SDPA's fused kernels handle dropout themselves
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask, is_causal=is_causal,
                                           dropout_p=attn.dropout_p if attn.training else 0.0, scale=attn.scale)
        return attn.out(y.transpose(1, 2).reshape(B, q_rows, H))
    q3, k3, v3 = q.reshape(B * nh, q_rows, hs), k.reshape(B * nh, T, hs), v.reshape(B * nh, T, hs)
    if is_causal:
        dense_mask = causal_mask(q_rows, T, x.device)
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


def _chunk_rows(BH: int, M: int, T: int, element_size: int, limit: int) -> int:
    """Rows of B * nh per chunk: (c, M, T) maps of at most ``limit`` bytes, in equal chunks."""
    chunks = -(-BH // max(1, limit // (M * T * element_size)))
    return -(-BH // chunks)


def _scores(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, fill: torch.Tensor | None, i: int,
            j: int, scale: float = 1.0) -> torch.Tensor:
    """The masked scores (c, M, T) of rows i:j, ``scale`` q k^T, the mask as ``_mask_bias`` gives it."""
    if bias is not None:
        return torch.baddbmm(bias if bias.size(0) == 1 else bias[i:j], q[i:j], k[i:j].transpose(1, 2), alpha=scale)
    scores = torch.bmm(q[i:j], k[i:j].transpose(1, 2))
    if scale != 1.0:
        scores.mul_(scale)
    if fill is not None:  # in place on bmm's own output: autograd keeps no copy of it
        scores.masked_fill_(~fill[i:j], torch.finfo(scores.dtype).min)
    return scores


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
    size = _chunk_rows(BH, M, T, q.element_size(), CHUNK_BYTES)
    scale = keep_scale(p)
    out = []
    for i in range(0, BH, size):
        j = min(i + size, BH)
        probs = _scores(q, k, bias, fill, i, j).softmax(dim=-1)
        probs = apply_keep(probs, keep_mask(probs, p), scale)  # attention dropout
        out.append(torch.bmm(probs, v[i:j]))
    return out[0] if len(out) == 1 else torch.cat(out)


Rows = tuple[torch.Tensor, torch.Tensor]  # (sequence, position) of each row: advanced indices into (B, T)


def _to_heads(x: torch.Tensor, rows: Rows | None, pads: Rows | None, B: int, T: int, nh: int, hs: int,
              parts: int) -> torch.Tensor:
    """(R, parts * nh * hs) rows -> (parts, B * nh, T, hs) head-major, in one pass. ``rows`` None: R = B * T in
    order; else row r goes to (rows[0][r], rows[1][r]) and the positions ``pads`` are zeroed (softmax gives
    masked keys a 0 weight, but 0 * NaN from uninitialized memory would still be NaN)."""
    if rows is None:
        return x.view(B, T, parts, nh, hs).permute(2, 0, 3, 1, 4).contiguous().view(parts, B * nh, T, hs)
    out = x.new_empty(parts, B, nh, T, hs)
    view = out.permute(1, 3, 0, 2, 4)  # (B, T, parts, nh, hs), a view of out
    view[rows] = x.view(-1, parts, nh, hs)
    if pads is not None:
        view[pads] = 0
    return out.view(parts, B * nh, T, hs)


def _flat_rows(rows: Rows | None, T: int) -> torch.Tensor | None:
    """``rows`` (sequence, position) as flat positions in B * T, for ``_from_heads``."""
    return None if rows is None else rows[0] * T + rows[1]


def _from_heads(x: torch.Tensor, flat_rows: torch.Tensor | None, B: int, T: int, nh: int, hs: int) -> torch.Tensor:
    """The inverse of ``_to_heads``: (parts, B * nh, T, hs) -> (R, parts * nh * hs): a row-major copy, then the
    rows at ``flat_rows`` (``_flat_rows``; None: all B * T in order)."""
    parts = x.size(0)
    flat = x.view(parts, B, nh, T, hs).permute(1, 3, 0, 2, 4).reshape(B * T, parts * nh * hs)  # one copy
    # then whole rows: index_select of the flat rows beat advanced indexing of the 5-d view 1.3-2x (2026-12-05)
    return flat if flat_rows is None else flat.index_select(0, flat_rows)


# _PackedAttention's chunks: with no per-chunk cost in its backward (explicit_attention's autograd zero-fills a
# full-size gradient per chunk slice), smaller maps that stay in cache win (one thread, 16 x 4 heads, forward +
# backward: T = 128 38.9 -> 29.5 ms, T = 384 156 -> 129 ms from 8 MiB to 1 MiB; 256 KiB no better)
PACKED_CHUNK_BYTES = 2 ** 20


class _PackedAttention(torch.autograd.Function):
    """``explicit_attention`` from the fused q / k / v rows to the output rows, with its own backward.

    Autograd through the chunked core spent as much on layout as on the softmax: the head-major q / k / v
    took three passes (zero fill, scatter, permute copy), each chunk's q[i:j] / k[i:j] / v[i:j] slice sent
    back a zero-filled full-size gradient that was then added up, and the unbind, permute and gather each
    copied again. Here the rows go to and from the head-major layout in one pass each way, every chunk's
    outputs and gradients are written in place, and a chunk keeps its softmax and its scaled keep mask (not
    the dropped map too). The dropout masks are drawn in the same order as ``explicit_attention`` (same
    masks for the same seed); tests/nn/attention/test_cpu_fastpath.py checks outputs and gradients."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, rows: Rows | None, pads: Rows | None, dense_mask: torch.Tensor | None,
                B: int, T: int, nh: int, hs: int, p: float, qscale: float) -> torch.Tensor:
        heads = _to_heads(qkv, rows, pads, B, T, nh, hs, 3)  # (3, B * nh, T, hs)
        q, k, v = heads.unbind(0)
        BH = B * nh
        bias = fill = None
        if dense_mask is not None:
            bias, fill = _mask_bias(dense_mask, B, nh, qkv.dtype)
        size = _chunk_rows(BH, T, T, qkv.element_size(), PACKED_CHUNK_BYTES)
        scale = keep_scale(p)
        y = qkv.new_empty(1, BH, T, hs)
        saved = []
        for i in range(0, BH, size):
            j = min(i + size, BH)
            scores = _scores(q, k, bias, fill, i, j, qscale)
            probs = scores.softmax(dim=-1)
            keep = keep_mask(probs, p).mul_(scale)  # the attention dropout: probs * keep
            torch.bmm(torch.mul(probs, keep, out=scores), v[i:j], out=y[0, i:j])
            saved += [probs, keep]
        ctx.save_for_backward(heads, *saved)
        flat = _flat_rows(rows, T)
        ctx.layout = (rows, pads, flat, B, T, nh, hs, size, qscale)
        return _from_heads(y, flat, B, T, nh, hs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, pads, flat, B, T, nh, hs, size, qscale = ctx.layout
        heads, *saved = ctx.saved_tensors
        q, k, v = heads.unbind(0)
        dy = _to_heads(grad.contiguous(), rows, pads, B, T, nh, hs, 1)[0]  # (B * nh, T, hs); 0 at padded rows
        grads = torch.empty_like(heads)
        dq, dk, dv = grads.unbind(0)
        for c, i in enumerate(range(0, B * nh, size)):
            j = min(i + size, B * nh)
            probs, keep = saved[2 * c], saved[2 * c + 1]
            dropped = probs * keep
            torch.bmm(dropped.transpose(1, 2), dy[i:j], out=dv[i:j])
            dprobs = torch.bmm(dy[i:j], v[i:j].transpose(1, 2), out=dropped).mul_(keep)
            dscores = torch._softmax_backward_data(dprobs, probs, -1, probs.dtype)
            if qscale != 1.0:  # scores = qscale q k^T: both products' gradients carry the factor
                dscores.mul_(qscale)
            torch.bmm(dscores, k[i:j], out=dq[i:j])
            torch.bmm(dscores.transpose(1, 2), q[i:j], out=dk[i:j])
        return _from_heads(grads, flat, B, T, nh, hs), None, None, None, None, None, None, None, None, None


def _varlen_blocks(lengths: list[int], nh: int, limit: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive sequences grouped so that a group's (nh, n, n) maps hold at most ``limit`` elements (a longer
    sequence alone): [(first row, n, offset in the group)] per group."""
    blocks: list[list[tuple[int, int, int]]] = []
    row = used = 0
    for n in lengths:
        size = nh * n * n
        if not blocks or used + size > limit:
            blocks.append([])
            used = 0
        blocks[-1].append((row, n, used))
        row, used = row + n, used + size
    return blocks


# Elements of a group's buffers in _VarlenAttention (its softmax maps, its keep mask): 8 MiB of float32. One
# buffer for a whole batch (38 MB at 16 x 4 heads x 384^2) would be over glibc's largest mmap threshold (32 MiB),
# so fresh, page-faulted pages every step.
VARLEN_BLOCK = 2 * 2 ** 20


class _VarlenAttention(torch.autograd.Function):
    """Padding-free attention one sequence at a time: qkv (N, 3H), the rows of each sequence consecutive.

    Each sequence's q / k / v are strided views of its rows (no layout copy, no padded key, no mask), its
    (nh, L, L) maps are small enough to stay in cache through scores -> softmax -> dropout -> product, and the
    outputs and gradients are written in place. Sequences go in groups of at most VARLEN_BLOCK map elements:
    one dropout draw and one softmax buffer (kept for the backward) per group. Against the batched
    ``_PackedAttention`` (benchmarks/attention_core.py, one thread, 16 sequences of 70-100 % of T, forward +
    backward): T = 128 19.0 -> 12.6 ms, T = 384 128.5 -> 88.6 ms; for short sequences (T = 32, 32 of them) the
    per-sequence calls cost more than they save (4.4 -> 5.5 ms), hence ``varlen_from``."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, lengths: list[int], nh: int, causal: bool, p: float) -> torch.Tensor:
        N, H = qkv.size(0), qkv.size(1) // 3
        hs = H // nh
        blocks = _varlen_blocks(lengths, nh, VARLEN_BLOCK)
        scratch = qkv.new_empty(nh * max(lengths) ** 2)
        scale = keep_scale(p)
        bias = None
        if causal:
            T = max(lengths)
            bias = qkv.new_zeros(T, T).masked_fill_(torch.ones(T, T, dtype=torch.bool).triu(1),
                                                     torch.finfo(qkv.dtype).min)
        y = qkv.new_empty(N, H)
        saved = []
        for block in blocks:
            row, n, at = block[-1]
            total = at + nh * n * n
            keep = keep_mask(qkv.new_empty(total), p).mul_(scale)
            probs = qkv.new_empty(total)  # the group's softmax, kept for the backward
            for row, n, at in block:
                size = nh * n * n
                q, k, v = qkv[row:row + n].view(n, 3, nh, hs).permute(1, 2, 0, 3).unbind(0)  # (nh, n, hs) views
                scores = scratch[:size].view(nh, n, n)
                if bias is None:
                    torch.bmm(q, k.transpose(1, 2), out=scores)
                else:
                    torch.baddbmm(bias[None, :n, :n], q, k.transpose(1, 2), out=scores)
                prob = torch.ops.aten._softmax.out(scores, -1, False, out=probs[at:at + size].view(nh, n, n))
                dropped = torch.mul(prob, keep[at:at + size].view(nh, n, n), out=scores)
                torch.bmm(dropped, v, out=y[row:row + n].view(n, nh, hs).transpose(0, 1))
            saved += [keep, probs]
        ctx.save_for_backward(qkv, *saved)
        ctx.layout = (blocks, nh)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        blocks, nh = ctx.layout
        qkv, *saved = ctx.saved_tensors
        grad = grad.contiguous()
        hs = qkv.size(1) // 3 // nh
        dqkv = torch.empty_like(qkv)
        scratch = qkv.new_empty(max(nh * n * n for block in blocks for _, n, _ in block))
        for b, block in enumerate(blocks):
            keep, probs = saved[2 * b], saved[2 * b + 1]
            for row, n, at in block:
                size = nh * n * n
                q, k, v = qkv[row:row + n].view(n, 3, nh, hs).permute(1, 2, 0, 3).unbind(0)
                dq, dk, dv = dqkv[row:row + n].view(n, 3, nh, hs).permute(1, 2, 0, 3).unbind(0)
                dy = grad[row:row + n].view(n, nh, hs).transpose(0, 1)
                prob, kept = probs[at:at + size].view(nh, n, n), keep[at:at + size].view(nh, n, n)
                work = scratch[:size].view(nh, n, n)
                torch.bmm(torch.mul(prob, kept, out=work).transpose(1, 2), dy, out=dv)
                dprobs = torch.bmm(dy, v.transpose(1, 2), out=work).mul_(kept)
                # softmax's backward in place: each row reads its sum before it writes (tested against autograd)
                dscores = torch.ops.aten._softmax_backward_data.out(dprobs, prob, -1, prob.dtype, grad_input=dprobs)
                torch.bmm(dscores, k, out=dq)
                torch.bmm(dscores.transpose(1, 2), q, out=dk)
        return dqkv, None, None, None, None


# The batch length (longest real sequence) from which sequences go through _VarlenAttention one at a time, by
# torch threads (benchmarks/attention_core.py, forward + backward of B sequences of 70-100 % of T, ms, varlen vs
# packed; 2026-12-05): one thread T = 32 5.5 vs 4.4, T = 64 10.1 vs 12.3; two threads T = 64 9.0 vs 6.9, T = 96
# 13.7 vs 12.8, T = 128 9.2 vs 10.9. Each small per-sequence op pays the thread pool's fork / join, so with more
# threads the crossover comes later.
VARLEN_MIN_LENGTH = 64  # one thread
VARLEN_MIN_LENGTH_THREADS = 128  # more


def varlen_from(threads: int) -> int:
    """The shortest batch length that goes through ``varlen_attention`` with ``threads`` torch threads."""
    return VARLEN_MIN_LENGTH if threads == 1 else VARLEN_MIN_LENGTH_THREADS


def varlen_attention(qkv: torch.Tensor, *, lengths: list[int], heads: int, causal: bool, p: float) -> torch.Tensor:
    """Attention within each sequence of the packed rows qkv (N, 3H), q already scaled, sequence i being the next
    ``lengths[i]`` rows -> (N, H): bidirectional, or causal in row order."""
    lengths = [n for n in lengths if n]
    if not lengths:  # no real token at all: (0, H)
        return qkv[:, : qkv.size(1) // 3] * 0.0
    return _VarlenAttention.apply(qkv, lengths, heads, causal, p)


# Up to this batch length (longest real sequence) padding-free inference attends the whole batch in three
# batched products instead of one SDPA call per sequence (``packed_sdpa``), by torch threads (forward of 64
# sequences of 50-100 % of T, 4 heads of 64, ms, per-sequence SDPA vs batched; 2026-12-05): two threads T = 16
# 1.95 vs 0.60, T = 32 2.49 vs 1.38, T = 48 2.45 vs 1.86-5.0 (noisy); one thread T = 16 1.80 vs 1.12, T = 24
# 2.20 vs 2.11, T = 32 2.53 vs 3.20. Short sentences (CoLA, SST-2) are where a call per sequence costs most.
PACKED_SDPA_UPTO = 16  # one thread
PACKED_SDPA_UPTO_THREADS = 32  # more


def packed_sdpa_upto(threads: int) -> int:
    """The longest batch length that goes through ``packed_sdpa`` with ``threads`` torch threads."""
    return PACKED_SDPA_UPTO if threads == 1 else PACKED_SDPA_UPTO_THREADS


def packed_sdpa(qkv: torch.Tensor, *, rows: Rows, pads: Rows | None, dense_mask: torch.Tensor | None, batch: int,
                length: int, heads: int, scale: float) -> torch.Tensor:
    """Inference (no autograd, no dropout) on CPU for short batches: softmax(q k^T scale, masked) v over the
    head-major layout of the rows qkv (N, 3H) -> (N, H), ``rows`` / ``pads`` as in ``packed_attention``."""
    H = qkv.size(1) // 3
    q, k, v = _to_heads(qkv, rows, pads, batch, length, heads, H // heads, 3).unbind(0)  # (B * nh, T, hs), fresh
    q.mul_(scale)  # a view of _to_heads' own new tensor
    bias = fill = None
    if dense_mask is not None:
        bias, fill = _mask_bias(dense_mask, batch, heads, qkv.dtype)
    probs = _scores(q, k, bias, fill, 0, q.size(0)).softmax(dim=-1)
    return _from_heads(torch.bmm(probs, v)[None], _flat_rows(rows, length), batch, length, heads, H // heads)


def varlen_sdpa(qkv: torch.Tensor, *, lengths: list[int], heads: int, causal: bool, scale: float) -> torch.Tensor:
    """Inference (no autograd) on CPU: SDPA within each sequence of the packed rows qkv (N, 3H) -> (N, H), on
    strided views of the rows, with no mask. The padded alternative scatters the rows into (B, nh, T, hs) and
    hands SDPA a boolean mask, which costs it its fast kernel: one thread, 28 sequences of 124-146 tokens,
    34.6 -> 12.6 ms; 5 of 327-384, 13.1 -> 10.9 ms (docs/finetuning.md)."""
    N, H = qkv.size(0), qkv.size(1) // 3
    hs = H // heads
    y = qkv.new_empty(N, H)
    row = 0
    for n in lengths:
        if n:
            q, k, v = qkv[row:row + n].view(1, n, 3, heads, hs).permute(2, 0, 3, 1, 4).unbind(0)  # (1, nh, n, hs)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
            y[row:row + n].view(n, heads, hs).copy_(out[0].transpose(0, 1))
        row += n
    return y


def packs_attention(qkv: torch.Tensor) -> bool:
    """Whether ``packed_attention`` takes these rows: float32 / float64 outside autocast (bf16 keeps
    ``explicit_attention``, which scales a 16-bit map by a float scalar; see nn/dropout.py ``apply_keep``)."""
    return qkv.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(qkv.device.type)


def packed_attention(qkv: torch.Tensor, *, rows: Rows | None, pads: Rows | None, dense_mask: torch.Tensor | None,
                     batch: int, length: int, heads: int, p: float, qscale: float = 1.0) -> torch.Tensor:
    """``explicit_attention`` on fused projections: qkv (R, 3H) -> (R, H), the scores ``qscale`` q k^T (1: q
    already scaled). ``rows`` None: R = batch * length, in order; else the (sequence, position) of each row, and
    ``pads`` the positions no row fills (the padding-free layers)."""
    H = qkv.size(1) // 3
    return _PackedAttention.apply(qkv, rows, pads, dense_mask, batch, length, heads, H // heads, p, qscale)
