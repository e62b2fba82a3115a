"""Block-sparse attention: one pattern description and three ways to compute it, with the same outputs.

A ``BlockPattern`` says, per head, which key blocks each query block attends to. BigBird (``bigbird.py``) and
the local causal window (``banded.py``) both become one; then

* ``blocks_attention``: the gathered-blocks path. Each sparse query block's key / value blocks are gathered
  into a (W x block) slab and one 4-d SDPA call runs over all of them; query blocks that see everything (BigBird's
  global rows) run dense. Cost and memory linear in the length. A key block listed twice in a row counts twice in
  its softmax, as in HF BigBird's eval mode (``bigbird.py`` says why that happens).
* ``mask_attention``: the reference: dense SDPA (or an explicit softmax, for the attention maps) under the
  pattern's (T, T) mask, a repeated block's keys weighted by log(count). O(T^2); small inputs, tests, maps.
* ``flex_attention`` (``torch.nn.attention.flex_attention``) with a ``BlockMask`` built from the same lists
  (no O(T^2) mask evaluation); compiled on CUDA. On CPU it has no backward and, compiled, ran slower than
  the gathered blocks (docs/long-sequences.md), so ``sparse_impl="auto"`` picks it on CUDA only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import InputError


@dataclass(frozen=True)
class BlockPattern:
    """Key blocks per query block for ``num_blocks`` blocks of ``block_size`` tokens.

    ``dense_rows``: query blocks that attend to every key block once (BigBird's global rows).
    ``rows`` (R,): the other query blocks, ascending; ``slots`` (nh or 1, R, W): their key blocks (a repeat counts
    twice); ``valid`` (nh or 1, R, W): False = an unused slot. ``token_mask`` (block, W x block) or None: which
    (query, key) pairs of a row's slab are allowed, the same for every row (the causal band inside a window).
    """

    block_size: int
    num_blocks: int
    dense_rows: tuple[int, ...]
    rows: torch.Tensor
    slots: torch.Tensor
    valid: torch.Tensor
    token_mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> BlockPattern:
        move = {name: getattr(self, name).to(device) for name in ("rows", "slots", "valid")}
        tm = self.token_mask.to(device) if self.token_mask is not None else None
        return BlockPattern(self.block_size, self.num_blocks, self.dense_rows, token_mask=tm, **move)

    def counts(self, num_heads: int) -> torch.Tensor:
        """(nh, nb, nb) int: how often query block i lists key block j (0 = not attended)."""
        nb = self.num_blocks
        out = torch.zeros(num_heads, nb, nb, dtype=torch.long, device=self.slots.device)
        if self.dense_rows:
            out[:, list(self.dense_rows)] = 1
        slots = self.slots.expand(num_heads, -1, -1)
        valid = self.valid.expand(num_heads, -1, -1).long()
        rows = out[:, self.rows]  # (nh, R, nb)
        rows.scatter_add_(2, slots, valid)
        out[:, self.rows] = rows
        return out


def pad_length(length: int, block: int) -> int:
    return -(-length // block) * block


def _allow_all_if_none(allowed: torch.Tensor) -> torch.Tensor:
    """A query row with no key allowed (a padding query) would give NaN: let it see everything (never read)."""
    return allowed | ~allowed.any(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------------------ blocks
def blocks_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: BlockPattern, *,
                     key_padding: torch.Tensor | None, scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """q, k, v (B, nh, T, hs), T = num_blocks x block_size; ``key_padding`` (B, T) True = a real key;
    ``dropout_p`` on the attention probabilities. Returns (B, nh, T, hs)."""
    B, nh, T, hs = q.shape
    bs, nb = pattern.block_size, pattern.num_blocks
    R, W = pattern.rows.numel(), pattern.slots.size(-1)
    qb = q.view(B, nh, nb, bs, hs)
    slots = pattern.slots.expand(nh, R, W)
    heads = torch.arange(nh, device=q.device)[:, None, None]
    index = (heads * nb + slots).reshape(-1)  # (nh * R * W,) into the (nh * nb) blocks of every sequence
    allowed = pattern.valid[:, :, :, None].expand(-1, -1, -1, bs)  # (nh|1, R, W, bs)
    if key_padding is not None:
        kp = key_padding.view(B, nb, bs)[:, pattern.slots]  # (B, nh|1, R, W, bs)
        allowed = allowed[None] & kp
    allowed = allowed.reshape(*allowed.shape[:-2], 1, W * bs)  # (..., R, 1, W*bs)
    if pattern.token_mask is not None:
        allowed = allowed & pattern.token_mask  # (..., R, bs, W*bs)
    mask = None
    if not bool(allowed.all()):
        mask = _allow_all_if_none(allowed)
        while mask.dim() < 5:
            mask = mask[None]
        mask = mask.expand(B, nh, R, -1, -1).reshape(B * nh * R, 1, *mask.shape[-2:])
    q_rows = qb[:, :, pattern.rows].reshape(B * nh * R, 1, bs, hs)
    kf, vf = k.reshape(B, nh * nb, bs, hs), v.reshape(B, nh * nb, bs, hs)
    if _use_gathered_flash(q, k, v, dropout_p):
        y = GatheredFlashAttention.apply(q_rows, kf, vf, index, _float_mask(mask, q.dtype), scale)
    else:
        kg = kf.index_select(1, index).view(B * nh * R, 1, W * bs, hs)  # (B*nh*R, 1, W*bs, hs)
        vg = vf.index_select(1, index).view(B * nh * R, 1, W * bs, hs)
        y = F.scaled_dot_product_attention(q_rows, kg, vg, attn_mask=mask, scale=scale, dropout_p=dropout_p)
    y = y.view(B, nh, R, bs, hs)
    if not pattern.dense_rows:
        return y.reshape(B, nh, T, hs)
    dense = list(pattern.dense_rows)
    dmask = None if key_padding is None else key_padding[:, None, None, :]  # (B, 1, 1, T)
    yd = F.scaled_dot_product_attention(qb[:, :, dense].reshape(B, nh, len(dense) * bs, hs), k, v,
                                        attn_mask=dmask, scale=scale, dropout_p=dropout_p,
                                        ).view(B, nh, len(dense), bs, hs)
    top = next((i for i, row in enumerate(dense) if row != i), len(dense))  # dense rows that open the sequence
    rows = pattern.rows.tolist()
    if dense == [*range(top), *range(nb - len(dense) + top, nb)] and rows == list(range(top, nb - len(dense) + top)):
        out = torch.cat([yd[:, :, :top], y, yd[:, :, top:]], dim=2)  # BigBird: globals first and last
    else:
        out = torch.empty(B, nh, nb, bs, hs, dtype=y.dtype, device=y.device)
        out = out.index_copy(2, pattern.rows, y).index_copy(2, torch.tensor(dense, device=y.device), yd)
    return out.reshape(B, nh, T, hs)


def _use_gathered_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> bool:
    """Training on CPU without attention dropout: the op below applies (it has no dropout)."""
    return (q.device.type == "cpu" and dropout_p == 0.0 and torch.is_grad_enabled()
            and any(t.requires_grad for t in (q, k, v))
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The additive form of a bool mask (the CPU flash op takes additive masks; SDPA converts them itself)."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class GatheredFlashAttention(torch.autograd.Function):
    """The sparse rows' attention over gathered key / value blocks, without keeping the gathered copies.

    Plain autograd would keep the (W x block) K and V slabs of every query block for the backward pass: W times
    the size of K and V (8x for BigBird). Here only q, k, v, the output and the log-sum-exp are saved (what dense
    SDPA saves); both passes gather the slabs in ``W`` chunks of query blocks (each chunk's slabs about the size
    of K), call SDPA's own CPU flash kernels, and the backward pass adds the slabs' gradients back into k and v
    (``index_add_``: a block in several slabs collects all its gradients). Measured: docs/long-sequences.md.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
                mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        B = k.size(0)  # q (N, 1, bs, hs) = B sequences x (nh * R) query blocks; k, v (B, nh * nb, bs, hs)
        out = q.new_empty(q.shape).view(B, -1, *q.shape[1:])
        lse = q.new_empty(B, q.size(0) // B, 1, q.size(2))
        for part, rows, idx, m in _chunks(q, k, index, mask):
            n = rows.size(0)
            o, l = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                rows, _gather(k, idx, n), _gather(v, idx, n), attn_mask=m, scale=scale)
            out[:, part] = o.view(B, -1, *o.shape[1:])
            lse[:, part] = l.view(B, -1, *l.shape[1:])
        ctx.save_for_backward(q, k, v, index, out, lse, *(() if mask is None else (mask,)))
        ctx.scale = scale
        return out.view(q.shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, index, out, lse, *rest = ctx.saved_tensors
        mask = rest[0] if rest else None
        B, _, bs, hs = k.shape
        grad = grad.contiguous().view(out.shape)
        dq = torch.empty_like(out)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        for part, rows, idx, m in _chunks(q, k, index, mask):
            n = rows.size(0)
            flat = (lambda t: t[:, part].reshape(n, *t.shape[2:]))  # (B, chunk, ...) -> (B * chunk, ...)
            dqc, dkg, dvg = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                flat(grad), rows, _gather(k, idx, n), _gather(v, idx, n), flat(out), flat(lse), 0.0, False,
                attn_mask=m, scale=ctx.scale)
            dq[:, part] = dqc.view(B, -1, *dqc.shape[1:])
            dk.index_add_(1, idx, dkg.reshape(B, -1, bs, hs))
            dv.index_add_(1, idx, dvg.reshape(B, -1, bs, hs))
        return dq.view(q.shape), dk, dv, None, None, None


def _gather(x: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, nh * nb, bs, hs) blocks at ``index`` -> (rows, 1, W*bs, hs) slabs."""
    return x.index_select(1, index).view(rows, 1, -1, x.size(-1))


def _chunks(q: torch.Tensor, k: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None) -> Any:
    """(slice of query blocks, their rows (B * chunk, 1, bs, hs), their slab index, their mask) in about W chunks
    along the (nh * R) query blocks of each sequence (every sequence's blocks sit at the same index)."""
    B = k.size(0)
    per_seq = q.size(0) // B  # nh * R query blocks per sequence
    W = index.numel() // per_seq
    step = max(1, -(-per_seq // W))
    qs = q.view(B, per_seq, *q.shape[1:])
    ms = None if mask is None else mask.view(B, per_seq, *mask.shape[1:])
    for s in range(0, per_seq, step):
        part = slice(s, min(s + step, per_seq))
        rows = qs[:, part].reshape(-1, *q.shape[1:])
        m = None if ms is None else ms[:, part].reshape(-1, *mask.shape[1:])
        yield part, rows, index[part.start * W:part.stop * W], m


# ------------------------------------------------------------------------------------------------ mask
def dense_bias(pattern: BlockPattern, num_heads: int, key_padding: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor:
    """The pattern as an additive (B|1, nh, T, T) score bias: log(count) where attended, -inf elsewhere."""
    bs = pattern.block_size
    counts = pattern.counts(num_heads)  # (nh, nb, nb)
    allowed = counts.repeat_interleave(bs, 1).repeat_interleave(bs, 2) > 0  # (nh, T, T)
    if pattern.token_mask is not None:
        allowed = allowed & _token_mask_dense(pattern)
    allowed = allowed[None]
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :]
    allowed = _allow_all_if_none(allowed)
    logc = counts.clamp(min=1).to(dtype).log().repeat_interleave(bs, 1).repeat_interleave(bs, 2)[None]
    return logc.masked_fill(~allowed, float("-inf"))


def _token_mask_dense(pattern: BlockPattern) -> torch.Tensor:
    """The shared in-slab token mask spread over (T, T) (only patterns with one head-independent slot list)."""
    bs, nb = pattern.block_size, pattern.num_blocks
    T = nb * bs
    out = torch.zeros(T, T, dtype=torch.bool, device=pattern.slots.device)
    W = pattern.slots.size(-1)
    for r, row in enumerate(pattern.rows.tolist()):
        for w in range(W):
            if bool(pattern.valid[0, r, w]):
                col = int(pattern.slots[0, r, w])
                out[row * bs:(row + 1) * bs, col * bs:(col + 1) * bs] |= pattern.token_mask[:, w * bs:(w + 1) * bs]
    return out


def mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, *, scale: float,
                   probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dense attention under an additive (B|1, nh, T, S) bias; ``probs``: an explicit softmax that also returns
    the attention maps (B, nh, T, S)."""
    if not probs:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale), None
    p = ((q @ k.transpose(-2, -1)) * scale + bias).softmax(dim=-1)  # (B, nh, T, S)
    return p @ v, p


# ------------------------------------------------------------------------------------------------ flex
_COMPILED: dict[str, Any] = {}
# compile flex_attention: None = on CUDA only (on CPU compiling took ~25 s and the result ran slower than the
# gathered blocks, docs/long-sequences.md); True / False force it (benchmarks/attention_scaling.py sets True)
COMPILE_FLEX: bool | None = None
FLEX_LENGTHS = 64  # distinct shapes compiled before torch falls back (see run_flex)


def flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def run_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any, *, scale: float,
             score_mod: Callable[..., torch.Tensor] | None = None, compiled: bool | None = None) -> torch.Tensor:
    """``flex_attention`` over (B, nh, T, hs); compiled by default on CUDA (eager flex is a slow reference)."""
    if not flex_available():
        raise InputError(f"sparse_impl='flex' needs torch.nn.attention.flex_attention (torch >= 2.5); this torch "
                         f"is {torch.__version__}: use sparse_impl='blocks'.")
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise InputError("FlexAttention has no backward on CPU in this torch; train with sparse_impl='blocks' "
                         "(or 'auto', which picks it on CPU).")
    if compiled is None:
        compiled = q.device.type == "cuda" if COMPILE_FLEX is None else COMPILE_FLEX
    fn = flex_attention
    if compiled:
        # one compiled kernel per sequence length (dynamic shapes do not compile for flex on CPU in torch 2.13).
        # Past dynamo's default limit of 8 lengths it silently runs flex EAGER, which materialises the whole
        # (T, T) score matrix: seen on an H200 as 24 GiB allocations at 16k tokens. 64 covers every multiple of
        # 64 tokens up to 4096 (BigBird pads to its block size).
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, FLEX_LENGTHS)
        fn = _COMPILED.setdefault("flex", torch.compile(flex_attention, dynamic=False))
    return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
              kernel_options=kernel_options(block_mask, q))


def kernel_options(block_mask: Any, q: torch.Tensor) -> dict[str, int] | None:
    """Triton tile sizes that divide the mask's blocks. The GPU kernels' default tiles are 128 wide and
    refuse BigBird's 64-token blocks ("Q and KV block size must be divisible by BLOCK_M and BLOCK_N",
    seen on an H200 with torch 2.11); these are the forward / backward tiles torch's own small configs use."""
    if q.device.type != "cuda":
        return None
    size = block_mask.BLOCK_SIZE
    bq, bk = (size, size) if isinstance(size, int) else size
    if bq >= 128 and bk >= 128:
        return None
    m, n = min(64, bq), min(64, bk)
    return {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_M1": min(32, m), "BLOCK_N1": n, "BLOCK_M2": m,
            "BLOCK_N2": min(32, n)}


def flex_block_mask(kv_blocks: torch.Tensor, *, block_size: int, seq_len: int,
                    mask_mod: Callable[..., torch.Tensor], batch: int = 1) -> Any:
    """A ``BlockMask`` from a (nh, nbq, nbk) bool table of attended blocks, every block partial (``mask_mod``
    decides inside it). Built from the table, not by evaluating ``mask_mod`` over (T, T)."""
    from torch.nn.attention.flex_attention import BlockMask

    table = kv_blocks.int()
    num = table.sum(-1).to(torch.int32)[None].expand(batch, -1, -1).contiguous()  # (B, nh, nbq)
    # attended blocks first, in ascending order
    index = torch.argsort(-table * table.size(-1) + torch.arange(table.size(-1), device=table.device), dim=-1)
    index = index.to(torch.int32)[None].expand(batch, -1, -1, -1).contiguous()  # (B, nh, nbq, nbk)
    return BlockMask.from_kv_blocks(num, index, BLOCK_SIZE=block_size, mask_mod=mask_mod,
                                    seq_lengths=(seq_len, seq_len))


def log_count_mod(log_counts: torch.Tensor, block_size: int) -> Callable[..., torch.Tensor]:
    """A flex ``score_mod`` adding log(count) of the (query block, key block) pair: a key block listed n times
    weighs n times in the softmax, as in the gathered path."""
    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                  kv_idx: torch.Tensor) -> torch.Tensor:
        return score + log_counts[h, q_idx // block_size, kv_idx // block_size]
    return score_mod


def has_repeats(counts: torch.Tensor) -> bool:
    return bool((counts > 1).any())
