"""BigBird block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences", ITC):
every query block attends to ``num_global_blocks`` global blocks (the first and the last), a sliding window of
``num_window_blocks`` blocks around itself and ``num_random_blocks`` random blocks; the global query blocks
attend to everything. Cost and memory grow linearly with the length.

Behaviour follows HF transformers' ``models/big_bird/modeling_big_bird.py`` (``BigBirdBlockSparseAttention``),
which the parity tests compare against (tests/parity/test_hf_bigbird.py):

* Random blocks are drawn per layer and head by HF's own rules (``_bigbird_block_rand_mask`` for lengths 1024,
  3072 and 4096, the "old plans used in the paper", ``_bigbird_block_rand_mask_with_head`` otherwise, both ported
  below with their random-number calls in the same order). In training HF seeds numpy with the layer index on
  every forward (``np.random.seed(seed)``, ``seed = layer_idx``), so the pattern of a layer at a length is fixed
  for the whole run, as in the original TF code where it was drawn once at graph construction. lmforge draws
  from ``numpy.random.RandomState(layer)``: the same blocks as HF, no global RNG touched, and nothing to save for
  an exact resume (the pattern is a function of layer, length and config).
* In eval mode HF draws nothing: its random-block table stays all zeros, so each of the r random slots of a
  non-global query block holds block 0, whose keys then enter that row's softmax 1 + r times. lmforge keeps
  exactly that (parity), and documents it: docs/long-sequences.md.
* Sequences of at most ``config.sparse_min_length`` tokens ((5 + 2r) x block = 704 by default) are too short
  for the pattern; HF switches to full attention silently (``BigBirdModel.forward``), lmforge does the same per
  call with one warning (``sparse_fallback="dense"``) or refuses (``"error"``). With a KV cache it is dense too.
* Inputs are padded inside to a multiple of ``block_size`` (HF ``_pad_to_block_size``) and the padding is cut
  from the output; padded query rows give 0 (HF ``from_mask``); there is no attention-probability dropout on
  the sparse path (HF's block-sparse module has none; the dense fallback keeps it).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.errors import InputError
from lmforge.nn.attention.cache import LayerSlot
from lmforge.nn.attention.cpu_fastpath import gather_rows
from lmforge.nn.attention.dense import KV, AttentionMask, DenseAttention
from lmforge.nn.attention.sparse import (BlockPattern, blocks_attention, dense_bias, flex_block_mask, has_repeats,
                                         log_count_mod, mask_attention, pad_length, run_flex)

HF_OLD_PLAN_LENGTHS = (1024, 3072, 4096)  # HF: "old plans used in paper" (only with 3 window + 2 global blocks)


# ------------------------------------------------------------------------------------------------ HF's rules
# Ported from transformers/models/big_bird/modeling_big_bird.py (BigBirdBlockSparseAttention); ``rng`` replaces
# the global np.random, ``None`` = eval mode (HF returns the all-zero table then).
def rand_attn_plan(from_seq_length: int, from_block_size: int, num_rand_blocks: int,
                   fixed_blocks: int = 5) -> tuple[list[int], list[int]]:
    """HF ``_get_rand_attn_plan``: where random blocks come from (``fixed_blocks`` = window + global, 5 in HF)."""
    plan_from_length, plan_num_rand_blocks = [], []
    if (2 * num_rand_blocks + fixed_blocks) < (from_seq_length // from_block_size):
        plan_from_length.append(int((2 * num_rand_blocks + fixed_blocks) * from_block_size))
        plan_num_rand_blocks.append(num_rand_blocks)
        plan_from_length.append(from_seq_length)
        plan_num_rand_blocks.append(0)
    elif (num_rand_blocks + fixed_blocks) < (from_seq_length // from_block_size):
        plan_from_length.append(int((num_rand_blocks + fixed_blocks) * from_block_size))
        plan_num_rand_blocks.append(num_rand_blocks // 2)
        plan_from_length.append(from_seq_length)
        plan_num_rand_blocks.append(num_rand_blocks - (num_rand_blocks // 2))
    else:
        plan_from_length.append(from_seq_length)
        plan_num_rand_blocks.append(num_rand_blocks)
    return plan_from_length, plan_num_rand_blocks


def block_rand_mask(rng: np.random.RandomState | None, from_seq_length: int, to_seq_length: int,
                    from_block_size: int, to_block_size: int, num_rand_blocks: int, last_idx: int = -1) -> np.ndarray:
    """HF ``_bigbird_block_rand_mask`` (lengths 1024 / 3072 / 4096): (from_blocks - 2, r), quirks included."""
    rand_attn = np.zeros((from_seq_length // from_block_size - 2, num_rand_blocks), dtype=np.int32)
    if rng is None:
        return rand_attn
    middle_seq = np.arange(1, to_seq_length // to_block_size - 1, dtype=np.int32)
    last = to_seq_length // to_block_size - 1
    if last_idx > (2 * to_block_size):
        last = (last_idx // to_block_size) - 1
    r = num_rand_blocks
    for i in range(1, from_seq_length // from_block_size - 1):
        start, end = i - 2, i
        if i == 1:
            rand_attn[i - 1, :] = rng.permutation(middle_seq[2:last])[:r]
        elif i == 2:
            rand_attn[i - 1, :] = rng.permutation(middle_seq[3:last])[:r]
        elif i == from_seq_length // from_block_size - 3:
            rand_attn[i - 1, :] = rng.permutation(middle_seq[:last])[:r]
        elif i == from_seq_length // from_block_size - 2:
            rand_attn[i - 1, :] = rng.permutation(middle_seq[:last])[:r]
        else:
            if start > last:
                start = last
                rand_attn[i - 1, :] = rng.permutation(middle_seq[:start])[:r]
            elif (end + 1) == last:
                rand_attn[i - 1, :] = rng.permutation(middle_seq[:start])[:r]
            else:
                rand_attn[i - 1, :] = rng.permutation(
                    np.concatenate((middle_seq[:start], middle_seq[end + 1:last])))[:r]
    return rand_attn


def single_block_row_attention(rng: np.random.RandomState, block_id: int, to_start_block_id: int,
                               to_end_block_id: int, num_rand_blocks: int, window_block_left: int = 1,
                               window_block_right: int = 1, global_block_left: int = 1,
                               global_block_right: int = 1) -> np.ndarray:
    """HF ``_get_single_block_row_attention``: r random key blocks for one query block."""
    to_block_list = np.arange(to_start_block_id, to_end_block_id, dtype=np.int32)
    perm_block = rng.permutation(to_block_list)
    illegal_blocks = list(range(block_id - window_block_left, block_id + window_block_right + 1))
    illegal_blocks.extend(list(range(global_block_left)))
    illegal_blocks.extend(list(range(to_end_block_id - global_block_right, to_end_block_id)))
    if block_id == 1:
        illegal_blocks.append(to_end_block_id - 2)
    if block_id == to_end_block_id - 2:
        illegal_blocks.append(1)
    selected: list[int] = []
    for i in range(to_end_block_id - to_start_block_id):
        if perm_block[i] not in illegal_blocks:
            selected.append(perm_block[i])
        if len(selected) == num_rand_blocks:
            break
    return np.array(selected, dtype=np.int32)


def block_rand_mask_with_head(rng: np.random.RandomState | None, from_seq_length: int, to_seq_length: int,
                              from_block_size: int, to_block_size: int, num_heads: int,
                              plan_from_length: list[int], plan_num_rand_blocks: list[int],
                              window_block_left: int = 1, window_block_right: int = 1, global_block_top: int = 1,
                              global_block_bottom: int = 1, global_block_left: int = 1,
                              global_block_right: int = 1) -> list[np.ndarray]:
    """HF ``_bigbird_block_rand_mask_with_head``: per head (from_blocks - top - bottom, r)."""
    num_blocks = from_seq_length // from_block_size
    plan_block_length = np.array(plan_from_length) // from_block_size
    max_plan_idx = plan_from_length.index(from_seq_length)
    rand_attn = [np.zeros((num_blocks, np.sum(plan_num_rand_blocks[:max_plan_idx + 1])), dtype=np.int32)
                 for _ in range(num_heads)]
    if rng is None:
        return [a[global_block_top:num_blocks - global_block_bottom, :] for a in rand_attn]

    def row(block_id: int, start: int, end: int, n: int) -> np.ndarray:
        return single_block_row_attention(rng, block_id, start, end, n, window_block_left, window_block_right,
                                          global_block_left, global_block_right)

    for plan_idx in range(max_plan_idx + 1):
        rnd_r_cnt = 0
        if plan_idx > 0:
            if plan_num_rand_blocks[plan_idx] > 0:
                rnd_r_cnt = int(np.sum(plan_num_rand_blocks[:plan_idx]))
                curr_r_cnt = int(np.sum(plan_num_rand_blocks[:plan_idx + 1]))
                for blk_rw_idx in range(global_block_top, plan_block_length[plan_idx - 1]):
                    for h in range(num_heads):
                        rand_attn[h][blk_rw_idx, rnd_r_cnt:curr_r_cnt] = row(
                            blk_rw_idx, plan_block_length[plan_idx - 1], plan_block_length[plan_idx],
                            plan_num_rand_blocks[plan_idx])
            for pl_id in range(plan_idx):
                if plan_num_rand_blocks[pl_id] == 0:
                    continue
                for blk_rw_idx in range(plan_block_length[plan_idx - 1], plan_block_length[plan_idx]):
                    rnd_r_cnt = 0
                    to_start_block_id = 0
                    if pl_id > 0:
                        rnd_r_cnt = int(np.sum(plan_num_rand_blocks[:pl_id]))
                        to_start_block_id = plan_block_length[pl_id - 1]
                    curr_r_cnt = int(np.sum(plan_num_rand_blocks[:pl_id + 1]))
                    for h in range(num_heads):
                        rand_attn[h][blk_rw_idx, rnd_r_cnt:curr_r_cnt] = row(
                            blk_rw_idx, to_start_block_id, plan_block_length[pl_id], plan_num_rand_blocks[pl_id])
        if plan_num_rand_blocks[plan_idx] == 0:
            continue
        curr_r_cnt = int(np.sum(plan_num_rand_blocks[:plan_idx + 1]))
        from_start_block_id = global_block_top
        to_start_block_id = 0
        if plan_idx > 0:
            rnd_r_cnt = int(np.sum(plan_num_rand_blocks[:plan_idx]))
            from_start_block_id = plan_block_length[plan_idx - 1]
            to_start_block_id = plan_block_length[plan_idx - 1]
        for blk_rw_idx in range(from_start_block_id, plan_block_length[plan_idx]):
            for h in range(num_heads):
                rand_attn[h][blk_rw_idx, rnd_r_cnt:curr_r_cnt] = row(
                    blk_rw_idx, to_start_block_id, plan_block_length[plan_idx], plan_num_rand_blocks[plan_idx])
    return [a[global_block_top:num_blocks - global_block_bottom, :] for a in rand_attn]


# ------------------------------------------------------------------------------------------------ the pattern
def global_blocks(config: ModelConfig) -> tuple[int, int]:
    """(first, last): how many global blocks open and close the sequence."""
    g = config.num_global_blocks
    return (g + 1) // 2, g // 2


def random_blocks(config: ModelConfig, *, layer: int, length: int, training: bool) -> np.ndarray:
    """(nh, sparse query blocks, r) random key blocks of one layer at a padded ``length``, as HF draws them."""
    bs, r, nh = config.block_size, config.num_random_blocks, config.num_heads
    rng = np.random.RandomState(layer) if training else None
    top, bottom = global_blocks(config)
    hf_shape = config.num_window_blocks == 3 and (top, bottom) == (1, 1)
    if hf_shape and length in HF_OLD_PLAN_LENGTHS:
        longest = max(config.max_positions, length)  # HF passes max_position_embeddings here
        table = [block_rand_mask(rng, longest, longest, bs, bs, r, last_idx=1024)[:length // bs - 2]
                 for _ in range(nh)]
    else:
        half = config.num_window_blocks // 2
        plan = rand_attn_plan(length, bs, r, fixed_blocks=config.num_window_blocks + config.num_global_blocks)
        table = block_rand_mask_with_head(rng, length, length, bs, bs, nh, *plan, window_block_left=half,
                                          window_block_right=half, global_block_top=top, global_block_bottom=bottom,
                                          global_block_left=top, global_block_right=bottom)
    return np.stack(table, axis=0)


def bigbird_pattern(config: ModelConfig, *, layer: int, length: int, training: bool) -> BlockPattern:
    """The ``BlockPattern`` of one layer at a padded ``length`` (a multiple of block_size)."""
    bs = config.block_size
    nb = length // bs
    top, bottom = global_blocks(config)
    half = config.num_window_blocks // 2
    rand = torch.from_numpy(random_blocks(config, layer=layer, length=length, training=training).astype(np.int64))
    nh, R, r = rand.shape
    rows = torch.arange(top, nb - bottom)  # (R,)
    # slots: first globals, window (centred, clipped, without the globals), random, last globals
    window = rows[:, None] + torch.arange(-half, half + 1)[None, :]  # (R, w)
    window_ok = (window >= top) & (window < nb - bottom)
    window = window.clamp(0, nb - 1)
    fixed_left = torch.arange(top).expand(R, top)
    fixed_right = torch.arange(nb - bottom, nb).expand(R, bottom)
    slots = torch.cat([fixed_left.expand(nh, R, top), window.expand(nh, R, -1), rand,
                       fixed_right.expand(nh, R, bottom)], dim=-1)  # (nh, R, W)
    valid = torch.cat([torch.ones(nh, R, top, dtype=torch.bool), window_ok.expand(nh, R, -1),
                       torch.ones(nh, R, r, dtype=torch.bool), torch.ones(nh, R, bottom, dtype=torch.bool)], dim=-1)
    slots = torch.where(valid, slots, torch.zeros_like(slots))
    return BlockPattern(bs, nb, tuple(range(top)) + tuple(range(nb - bottom, nb)), rows, slots.contiguous(), valid)


# ------------------------------------------------------------------------------------------------ the module
class BigBirdAttention(DenseAttention):
    """``attention_kind="bigbird"``: DenseAttention's parameters (``qkv``, ``out``), block-sparse compute."""

    def __init__(self, config: ModelConfig, *, layer: int = 0) -> None:
        super().__init__(config, layer=layer)
        self.config = config
        self.layer = layer
        self._patterns: dict[tuple[int, bool, str], BlockPattern] = {}  # (length, training, device)

    def pattern(self, length: int, device: torch.device) -> BlockPattern:
        key = (length, self.training, str(device))
        if key not in self._patterns:
            self._patterns[key] = bigbird_pattern(self.config, layer=self.layer, length=length,
                                                  training=self.training).to(device)
        return self._patterns[key]

    def impl(self, x: torch.Tensor, output_attentions: bool) -> str:
        impl = self.config.sparse_impl
        if output_attentions:
            return "mask"  # the maps need the explicit softmax
        if impl == "auto":
            return "flex" if x.device.type == "cuda" else "blocks"
        return impl

    def forward(self, x: torch.Tensor, *, mask: AttentionMask, past: KV | LayerSlot | None = None,
                use_cache: bool = False, output_attentions: bool = False, query_index: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        B, T, H = x.shape
        if past is not None or use_cache or T <= self.config.sparse_min_length:
            self.fall_back(T, cached=past is not None or use_cache)
            return super().forward(x, mask=mask, past=past, use_cache=use_cache,
                                   output_attentions=output_attentions, query_index=query_index)
        c = self.config
        nh, hs, bs = self.num_heads, self.head_size, c.block_size
        Tp = pad_length(T, bs)
        key_padding = mask.key_padding  # (B, T) True = real, None = no padding
        if Tp != T:  # pad inside, as HF's _pad_to_block_size; the pad keys are masked
            x = F.pad(x, (0, 0, 0, Tp - T))
            real = key_padding if key_padding is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
            key_padding = F.pad(real, (0, Tp - T), value=False)
        q, k, v = self.qkv(x).split(H, dim=-1)
        q = q.view(B, Tp, nh, hs).transpose(1, 2)  # (B, nh, Tp, hs)
        k = k.view(B, Tp, nh, hs).transpose(1, 2)
        v = v.view(B, Tp, nh, hs).transpose(1, 2)
        if query_index is not None and not output_attentions and int(query_index.max()) < global_blocks(c)[0] * bs:
            # only rows of the opening global block(s) are wanted (a classifier's [CLS] in the last layer): global
            # rows attend to every key, so a dense product for those rows alone is the block-sparse function there
            keep = None if key_padding is None else key_padding[:, None, None, :]  # (B, 1, 1, Tp)
            qr = q.gather(2, query_index[:, None, :, None].expand(-1, nh, -1, hs))  # (B, nh, M, hs)
            y = F.scaled_dot_product_attention(qr, k, v, attn_mask=keep, scale=self.scale)  # (B, nh, M, hs)
            if key_padding is not None:  # HF from_mask: padded query rows give 0
                y = y * key_padding.gather(1, query_index)[:, None, :, None].to(y.dtype)
            return self.out(y.transpose(1, 2).reshape(B, -1, H)), None, None
        pattern = self.pattern(Tp, x.device)
        impl = self.impl(x, output_attentions)
        probs = None
        if impl == "blocks":
            y = blocks_attention(q, k, v, pattern, key_padding=key_padding, scale=self.scale)
        elif impl == "flex":
            y = self._flex(q, k, v, pattern, key_padding)
        else:
            bias = dense_bias(pattern, nh, key_padding, q.dtype)
            y, probs = mask_attention(q, k, v, bias, scale=self.scale, probs=output_attentions)
        if key_padding is not None:  # HF from_mask: padded query rows give 0
            y = y * key_padding[:, None, :, None].to(y.dtype)
        y = y.transpose(1, 2).reshape(B, Tp, H)[:, :T]  # (B, T, H)
        if probs is not None:
            probs = probs[:, :, :T, :T]
        if query_index is not None:
            y = gather_rows(y, query_index)  # (B, M, H)
        return self.out(y), None, probs

    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: BlockPattern,
              key_padding: torch.Tensor | None) -> torch.Tensor:
        bs, nh = pattern.block_size, self.num_heads
        counts = pattern.counts(nh)  # (nh, nb, nb)
        attended = counts > 0

        if key_padding is None:
            def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return attended[h, q_idx // bs, kv_idx // bs]
        else:
            def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return attended[h, q_idx // bs, kv_idx // bs] & key_padding[b, kv_idx]
        block_mask = flex_block_mask(attended, block_size=bs, seq_len=q.size(2), mask_mod=mask_mod,
                                     batch=q.size(0) if key_padding is not None else 1)
        score_mod = None
        if has_repeats(counts):
            score_mod = log_count_mod(counts.clamp(min=1).to(q.dtype).log(), bs)
        return run_flex(q, k, v, block_mask, scale=self.scale, score_mod=score_mod)

    def fall_back(self, length: int, *, cached: bool) -> None:
        """Dense attention for a short sequence (or with a KV cache): say so once, or refuse."""
        c = self.config
        if cached:
            why = "with a KV cache (decoding)"
        else:
            why = f"on sequences of at most sparse_min_length={c.sparse_min_length} tokens"
        if c.sparse_fallback == "error" and not cached:
            raise InputError(f"the sequence has {length} tokens, too few for BigBird's block-sparse pattern (more than "
                             f"{c.sparse_min_length} = (window {c.num_window_blocks} + global {c.num_global_blocks} "
                             f"+ 2 x random {c.num_random_blocks}) blocks of {c.block_size}); ModelConfig."
                             "sparse_fallback='error' refuses it: pass a longer input or set sparse_fallback='dense'.")
        # one warning per process and reason: the text does not name the length
        warnings.warn(f"attention_kind='bigbird' uses full (dense) attention {why}, as HF BigBird does "
                      "(ModelConfig.sparse_fallback='dense'; 'error' refuses such inputs).", UserWarning, stacklevel=2)
