"""Reformer's attention kinds (Kitaev et al. 2020, "Reformer: The Efficient Transformer"): "lsh" and "local".

Both follow HF ``models/reformer/modeling_reformer.py`` (``LSHSelfAttention``, ``LocalSelfAttention``) step by
step, so HF checkpoints give the same logits (tests/parity/test_hf_reformer.py):

* "local": the sequence is cut into chunks of ``local_chunk_length``; a chunk's queries see the keys of their
  own chunk and of the previous one (HF ``_look_adjacent`` with 1 chunk before, 0 after; it wraps around, so in
  an encoder the first chunk sees the last one). Keys are divided by sqrt(head size) before the product.
* "lsh": one shared projection gives queries and keys (``qk``, no bias); keys are the queries normalised to
  unit length / sqrt(head size) (HF ``_len_and_dim_norm``). Each of ``num_hashes`` rounds hashes every vector
  by a random rotation R (head size x num_buckets / 2): bucket = argmax([xR, -xR]) (angular LSH, paper
  section 2); ``num_buckets`` [a, b] factorises the buckets (bucket = argmax over the first a/2 rotations +
  a * argmax over the next b/2). Positions are sorted by (round, bucket, position), cut into chunks of
  ``lsh_chunk_length``, and each chunk attends to itself and the previous chunk of the sorted order. A token
  does not attend to itself (its shared-QK self-score dominates) unless it has nothing else: the self score is
  -1e5 while masked (future / padding) scores are -1e9. The rounds are combined by the softmax of their
  log-sum-exps: out = sum_r exp(lse_r - logsumexp_r(lse_r)) out_r. A key found in k rounds then weighs k times
  (HF); ``lsh_dedup=True`` subtracts log(k) from such scores (the paper's de-duplication, section 2.1 / trax), and
  the rounds then combine to exactly the softmax over the union of the keys each query saw in any round.
  Sequences of at most one chunk use full attention with the same self / causal masks and no hashing (HF).

Lengths above one chunk must be a multiple of the chunk length; the body pads to it
(``Transformer.pad_to_chunks``, as HF ReformerModel does in evaluation). "lsh" has no KV cache (generation
recomputes the prefix each step: ``use_cache=False``); "local" uses the ordinary (k, v) cache, a new query
seeing keys from the start of the previous chunk up to itself. No attention maps: ``probs`` is None.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import InputError
from lmforge.nn.attention.cache import LayerSlot, StaticSlot
from lmforge.nn.attention.cpu_fastpath import gather_rows
from lmforge.nn.attention.dense import KV, AttentionMask, DenseAttention

MASKED = -1e9  # HF mask_value_float32: future / padded keys
SELF = -1e5  # HF self_mask_value_float32: a token's own key, used only when nothing else is visible
MASKED_HALF, SELF_HALF = -1e4, -1e3  # HF's float16 values


def mask_values(dtype: torch.dtype) -> tuple[float, float]:
    return (MASKED_HALF, SELF_HALF) if dtype == torch.float16 else (MASKED, SELF)


def look_back(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, n, c, ...) chunks -> (B, nh, n, 2c, ...): each chunk preceded by the previous one, the first
    by the last (HF ``_look_adjacent(vectors, 1, 0)``, which wraps around)."""
    return torch.cat([torch.roll(x, 1, dims=2), x], dim=3)


def chunk(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, nh, L, ...) -> (B, nh, L / length, length, ...)."""
    return x.reshape(x.shape[:2] + (-1, length) + x.shape[3:])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, *,
           causal: bool, key_real: torch.Tensor | None, self_mask: bool, dropout_p: float,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of q (..., Q, hs) over k, v (..., K, hs) with HF Reformer's masks by original position
    (``q_pos`` (..., Q), ``k_pos`` (..., K)); ``key_real`` (..., K) False = padding; ``bias`` (..., Q, K) added to
    the scores. -> (out, log-sum-exp (..., Q))."""
    dots = q @ k.transpose(-1, -2)  # (..., Q, K)
    if bias is not None:
        dots = dots + bias
    masked, own = mask_values(dots.dtype)
    allowed = None
    if key_real is not None:
        allowed = key_real.unsqueeze(-2)
    if causal:
        later = q_pos.unsqueeze(-1) >= k_pos.unsqueeze(-2)
        allowed = later if allowed is None else allowed & later
    if allowed is not None:
        dots = dots.masked_fill(~allowed, masked)
    if self_mask:
        dots = dots.masked_fill(q_pos.unsqueeze(-1) == k_pos.unsqueeze(-2), own)
    lse = torch.logsumexp(dots, dim=-1, keepdim=True)
    probs = torch.exp(dots - lse)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return probs @ v, lse.squeeze(-1)


def check_chunks(length: int, chunk_length: int, kind: str) -> None:
    if length > chunk_length and length % chunk_length:
        raise InputError(f"attention_kind={kind!r} needs a sequence length that is a multiple of its chunk length "
                         f"{chunk_length} (or at most one chunk), got {length}; the model pads to it itself "
                         "(Transformer.pad_to_chunks), so pad the input the same way when calling a layer directly.")


class LocalAttention(DenseAttention):
    """``attention_kind="local"``: DenseAttention's parameter names (``qkv``, ``out``; heads of
    ``attention_head_size``), chunked local attention."""

    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        nn.Module.__init__(self)
        self.num_heads, self.head_size = config.num_heads, config.reformer_head_size
        inner = self.num_heads * self.head_size  # HF: num_heads * attention_head_size, may differ from H
        self.qkv = nn.Linear(config.hidden_size, 3 * inner, bias=config.qkv_bias)
        self.out = nn.Linear(inner, config.hidden_size, bias=config.attention_out_bias)
        self.dropout_p = config.attention_dropout
        self.causal = config.causal
        self.chunk_length = config.local_chunk_length

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | LayerSlot | None = None,
                use_cache: bool = False, output_attentions: bool = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        B, T, _ = x.shape
        nh, hs = self.num_heads, self.head_size
        q, k, v = (t.reshape(B, T, nh, hs).transpose(1, 2) for t in self.qkv(x).split(nh * hs, dim=-1))
        p = self.dropout_p if self.training else 0.0
        present = None
        if past is not None or use_cache:
            if isinstance(past, LayerSlot):
                k, v = past.update(k, v)
            else:
                if past is not None:
                    k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
                present = (k, v) if use_cache else None
            y = self._cached(q, k, v, mask, past, p)
        else:
            y = self._chunked(q, k, v, mask.key_padding, p)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)
        if query_index is not None:
            y = gather_rows(y, query_index)
        return self.out(y), present, None

    def _chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding: torch.Tensor | None,
                 p: float) -> torch.Tensor:
        B, nh, T, hs = q.shape
        c = self.chunk_length
        k = k / math.sqrt(hs)  # HF divides the keys, not the scores
        pos = torch.arange(T, device=q.device).expand(B, nh, T)
        real = key_padding[:, None, :].expand(B, nh, T) if key_padding is not None else None
        if T <= c:
            return attend(q, k, v, pos, pos, causal=self.causal, key_real=real, self_mask=False, dropout_p=p)[0]
        check_chunks(T, c, "local")
        qc, kc, vc, qp = chunk(q, c), look_back(chunk(k, c)), look_back(chunk(v, c)), chunk(pos, c)
        y, _ = attend(qc, kc, vc, qp, look_back(qp), causal=self.causal,
                      key_real=look_back(chunk(real, c)) if real is not None else None, self_mask=False, dropout_p=p)
        return y.reshape(B, nh, T, hs)

    def _cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, past: Any,
                p: float) -> torch.Tensor:
        """T new queries over S cached + new keys: query at position i sees keys from the start of the chunk
        before its own up to i (what the chunked form gives a decoder)."""
        B, nh, T, hs = q.shape
        S, c = k.size(2), self.chunk_length
        # the static decode step: one query at column ``index`` of the preallocated buffer
        last = past.index if isinstance(past, StaticSlot) else torch.tensor(S - 1, device=q.device)
        qpos = last - torch.arange(T - 1, -1, -1, device=q.device)  # (T,)
        kpos = torch.arange(S, device=q.device)
        first = (torch.div(qpos, c, rounding_mode="floor") - 1) * c  # start of the previous chunk
        allowed = (kpos[None] <= qpos[:, None]) & (kpos[None] >= first[:, None])
        allowed = allowed[None, None]  # (1, 1, T, S)
        if mask.dense is not None:  # padding of the body's mask (cache columns included)
            allowed = allowed & mask.dense[..., -S:]
        k = k / math.sqrt(hs)
        dots = (q @ k.transpose(-1, -2)).masked_fill(~allowed, mask_values(q.dtype)[0])
        probs = torch.softmax(dots, dim=-1)
        if p > 0:
            probs = F.dropout(probs, p=p, training=True)
        return probs @ v


class LSHAttention(nn.Module):
    """``attention_kind="lsh"``: parameters ``qk`` (shared query-key projection) and ``v`` (both (H, H), bias
    as ``qkv_bias``; HF: none), ``out`` (H, H)."""

    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        super().__init__()
        self.config = config
        self.num_heads, self.head_size = config.num_heads, config.reformer_head_size
        inner = self.num_heads * self.head_size
        self.qk = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.v = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.out = nn.Linear(inner, config.hidden_size, bias=config.attention_out_bias)
        self.dropout_p = config.attention_dropout
        self.chunk_length = config.lsh_chunk_length
        self.causal = config.causal

    def num_buckets(self, length: int) -> int | list[int]:
        """The configured buckets, or HF's rule (``_set_num_buckets``): 2 * length / chunk rounded down to a power
        of two, factorised into two powers of two when above 2 * max(sqrt(max_positions / chunk), chunk)."""
        if self.config.num_buckets is not None:
            return self.config.num_buckets
        c = self.chunk_length
        power = (2 * (length // c)).bit_length() - 1
        limit = 2 * max(int((self.config.max_positions // c) ** 0.5), c)
        return [2 ** (power // 2), 2 ** (power - power // 2)] if 2 ** power > limit else max(2 ** power, 2)

    def rotations(self, num_hashes: int, rotation_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(nh, hs, num_hashes, rotation_size / 2) Gaussian rotations: from a generator seeded with ``hash_seed``
        (the numbers HF draws after ``torch.manual_seed(hash_seed)``, without reseeding the global generator), or
        from torch's generator (then replayed by the reversible backward from its saved state)."""
        shape = (self.num_heads, self.head_size, num_hashes, rotation_size // 2)
        if self.config.hash_seed is None:
            return torch.randn(shape, device=device, dtype=dtype)
        gen = torch.Generator(device=device).manual_seed(self.config.hash_seed)
        return torch.randn(shape, device=device, dtype=dtype, generator=gen)

    def hash(self, vectors: torch.Tensor, num_hashes: int, key_padding: torch.Tensor | None) -> torch.Tensor:
        """(B, nh, T, hs) -> buckets (B, nh, num_hashes * T), round r's offset by r * (number of buckets)
        (HF ``_hash_vectors``; padding gets an extra last bucket)."""
        b = self.num_buckets(vectors.size(2))
        factors = b if isinstance(b, list) else [b]
        rot = self.rotations(num_hashes, sum(factors), vectors.device, vectors.dtype)
        rotated = torch.einsum("bmtd,mdhr->bmhtr", vectors.detach(), rot)  # (B, nh, hashes, T, sum / 2)
        buckets, start, product = None, 0, 1
        for f in factors:
            part = rotated[..., start:start + f // 2]
            start += f // 2
            found = torch.cat([part, -part], dim=-1).argmax(dim=-1)
            buckets = found if buckets is None else buckets + product * found
            product *= f
        if key_padding is not None:
            product += 1
            buckets = buckets.masked_fill(~key_padding[:, None, None, :], product - 1)
        offsets = (torch.arange(num_hashes, device=vectors.device) * product).view(1, 1, -1, 1)
        return (buckets + offsets).flatten(2)

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | LayerSlot | None = None,
                use_cache: bool = False, output_attentions: bool = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        if past is not None:  # use_cache alone computes as usual and caches nothing (present None)
            raise InputError("attention_kind='lsh' has no KV cache: its buckets are recomputed over the whole "
                             "sequence. Generate with use_cache=False (each step recomputes the prefix), or use "
                             "'local' / 'dense' layers for cached decoding.")
        B, T, _ = x.shape
        nh, hs, c = self.num_heads, self.head_size, self.chunk_length
        qk = self.qk(x).reshape(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).reshape(B, T, nh, hs).transpose(1, 2)
        p = self.dropout_p if self.training else 0.0
        padding = mask.key_padding
        pos = torch.arange(T, device=x.device).expand(B, nh, T)
        if T <= c:  # one chunk: full attention, same masks, no hashing (HF)
            y = attend(qk, key_norm(qk), v, pos, pos, causal=self.causal, self_mask=True, dropout_p=p,
                       key_real=padding[:, None, :].expand(B, nh, T) if padding is not None else None)[0]
        else:
            check_chunks(T, c, "lsh")
            y = self._hashed(qk, v, padding, p)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)
        if query_index is not None:
            y = gather_rows(y, query_index)
        return self.out(y), None, None

    def times_seen(self, undo: torch.Tensor, pos: torch.Tensor, n: int, T: int) -> torch.Tensor:
        """(B, nh, n * T / c, c, 2c) int32: for each (query slot, key slot) of the chunked attention, how many times
        that (query position, key position) pair meets over all rounds (>= 1). A position's chunk in round r is
        its sorted slot // c (``undo``); a query slot in chunk g sees chunks g and g - 1 (wrapping over all rounds'
        chunks, as ``look_back``), so the pair meets once per (r, r') with chunk_r'(key) in {chunk_r(query),
        chunk_r(query) - 1}."""
        B, nh = pos.shape[:2]
        c = self.chunk_length
        total = n * T // c
        chunk_of = (undo // c).reshape(B, nh, n, T)  # (B, nh, round, position) -> global chunk index
        q_pos, k_pos = chunk(pos, c), look_back(chunk(pos, c))  # (B, nh, N, c), (B, nh, N, 2c)
        flat = lambda p: p.reshape(B, nh, -1)  # noqa: E731
        count = torch.zeros(q_pos.shape + (2 * c,), device=pos.device, dtype=torch.int32)
        for r in range(n):
            q_chunk = chunk_of[:, :, r].gather(2, flat(q_pos)).reshape(q_pos.shape)[..., :, None]  # (.., c, 1)
            for r2 in range(n):
                k_chunk = chunk_of[:, :, r2].gather(2, flat(k_pos)).reshape(k_pos.shape)[..., None, :]  # (.., 1, 2c)
                count += (k_chunk == q_chunk) | (k_chunk == (q_chunk - 1) % total)
        return count.clamp_(min=1)

    def _hashed(self, qk: torch.Tensor, v: torch.Tensor, padding: torch.Tensor | None, p: float) -> torch.Tensor:
        B, nh, T, hs = qk.shape
        n, c = self.config.num_hashes, self.chunk_length
        buckets = self.hash(qk, n, padding)  # (B, nh, n * T)
        with torch.no_grad():
            # a stable sort by (round, bucket, position): buckets * length + position, as HF's _stable_argsort
            order = torch.arange(n * T, device=qk.device)
            sorted_idx = (buckets * (n * T) + order).argsort(dim=-1)  # (B, nh, n * T)
            undo = torch.empty_like(sorted_idx).scatter_(-1, sorted_idx, order.expand_as(sorted_idx))
        pos = sorted_idx % T  # original position of each sorted slot
        expand = pos.unsqueeze(-1).expand(-1, -1, -1, hs)
        sq = qk.repeat(1, 1, n, 1).gather(2, expand)  # (B, nh, n * T, hs) in sorted order
        sv = v.repeat(1, 1, n, 1).gather(2, expand)
        real = None
        if padding is not None:
            real = look_back(chunk(padding[:, None, :].expand(B, nh, T).gather(2, pos), c))
        qp = chunk(pos, c)
        bias = None
        if self.config.lsh_dedup and n > 1:
            bias = -self.times_seen(undo, pos, n, T).to(qk.dtype).log()
        y, lse = attend(chunk(sq, c), look_back(chunk(key_norm(sq), c)), look_back(chunk(sv, c)), qp, look_back(qp),
                        causal=self.causal, key_real=real, self_mask=True, dropout_p=p, bias=bias)
        y, lse = y.reshape(B, nh, n * T, hs), lse.reshape(B, nh, n * T)
        y = y.gather(2, undo.unsqueeze(-1).expand(-1, -1, -1, hs))  # back to (round, position) order
        lse = lse.gather(2, undo)
        if n == 1:
            return y
        y, lse = y.reshape(B, nh, n, T, hs), lse.reshape(B, nh, n, T, 1)
        return (y * torch.exp(lse - torch.logsumexp(lse, dim=2, keepdim=True))).sum(dim=2)


def key_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Keys of shared-QK attention: x / RMS(x) / sqrt(head size) (HF ``_len_and_dim_norm``)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) / math.sqrt(x.size(-1))
