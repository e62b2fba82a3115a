"""The one Transformer body: embeddings, N blocks (pre- or post-LN, with optional cross-layer sharing), the
final norm of pre-LN stacks and the pooler; bidirectional encoder or causal decoder with a KV cache."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.config import ModelConfig
from lmforge.errors import InputError
from lmforge.models.output import ModelOutput
from lmforge.nn.attention import AttentionMask, KVCache, LayerSlot
from lmforge.nn.attention.cpu_fastpath import gather_rows
from lmforge.nn.attention.dense import KV, DenseAttention
from lmforge.nn.attention.unpadded import Unpadding, repad, unpadding
from lmforge.nn.block import Block
from lmforge.nn.embeddings import Embeddings
from lmforge.nn.reversible import run_plain, run_reversible


class LayerOutputs(NamedTuple):
    """What ``Transformer.run_layers`` returns (a NamedTuple: torch.compile traces it)."""

    hidden: torch.Tensor  # (B, T, H) the last layer's output (no final norm)
    presents: list[KV]  # per layer (k, v) when use_cache with a tuple cache
    attentions: list[torch.Tensor]  # per layer (B, nh, T, S) when output_attentions
    hidden_states: list[torch.Tensor]  # the input, then each layer's output, when output_hidden_states


class Pooler(nn.Module):
    """tanh(dense(hidden state of the first token)) (BERT / RoBERTa / ALBERT; HF counts it in the base model)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class Transformer(nn.Module):
    """Encoder or causal decoder. Layer i runs stored layer ``config.layer_index(i)`` (ALBERT sharing)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config, layer=i) for i in range(config.num_stored_layers))
        pre = config.norm_placement == "pre"
        self.final_norm = nn.LayerNorm(config.output_size, eps=config.layer_norm_eps) if pre else None
        self.pooler = Pooler(config) if config.has_pooler else None
        self.gradient_checkpointing = False  # recompute each layer in backward (the trainer's flag)
        # reversible=True: recompute the layers' inputs in backward; False runs the same two-stream stack with
        # stored activations (the reference of tests and benchmarks/reformer.py)
        self.reversible_backward = True
        # run the layers on the real tokens of a padded batch only (nn/attention/unpadded.py); padded
        # positions of last_hidden_state are then 0. Fine-tuning switches it on (recipes/finetune.py)
        self.padding_free = False

    # ------------------------------------------------------------------ input checks
    def check_inputs(self, input_ids: torch.Tensor, position_ids: torch.Tensor, past_length: int,
                     token_type_ids: torch.Tensor | None) -> None:
        """Clear errors instead of an index error from inside an embedding (one host sync per check)."""
        c = self.config
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise InputError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.device.type == "meta" or input_ids.numel() == 0:
            return
        length = past_length + input_ids.size(1)
        if length > c.max_length:
            raise InputError(f"the sequence has {length} tokens{' (with the cache)' if past_length else ''} but this "
                             f"model's position table allows at most {c.max_length} (max_positions="
                             f"{c.max_positions}); truncate the input (tokenizer truncation=True, max_length="
                             f"{c.max_length}).")
        if torch.compiler.is_compiling():
            # reading values out (.item()) breaks the compiled graph in two every step (seen on an H200:
            # compiled lmforge 0.93x compiled HF); the shape checks above still run
            return
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= c.vocab_size:
            bad = hi if hi >= c.vocab_size else lo
            raise InputError(f"token id {bad} is outside the vocabulary [0, {c.vocab_size}); the tokenizer does not "
                             "match the model: use the model's tokenizer, or call model.resize_token_embeddings"
                             "(len(tokenizer)) after adding tokens.")
        if int(position_ids.max()) >= c.max_positions or int(position_ids.min()) < 0:
            raise InputError(f"position id {int(position_ids.max())} is outside the position table [0, "
                             f"{c.max_positions}); the model allows sequences of at most {c.max_length} tokens.")
        if token_type_ids is not None and c.type_vocab_size > 0:
            if int(token_type_ids.max()) >= c.type_vocab_size or int(token_type_ids.min()) < 0:
                raise InputError(f"token_type_ids hold {int(token_type_ids.max())} but the model has "
                                 f"{c.type_vocab_size} segment type(s); ids must be in [0, {c.type_vocab_size}).")

    def attention_mask(self, attention_mask: torch.Tensor | None, batch: int, length: int, past_length: int,
                       device: torch.device) -> AttentionMask:
        """The mask every layer uses; no dense tensor when there is no padding (SDPA's fast kernels)."""
        causal = self.config.causal
        total = past_length + length
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.size(0) != batch:
                raise InputError(f"attention_mask must be (batch, length) = ({batch}, {total}), got "
                                 f"{tuple(attention_mask.shape)}.")
            if attention_mask.size(1) == length and past_length:
                # the mask covers only the new tokens: the cached ones were real
                attention_mask = torch.cat([attention_mask.new_ones(batch, past_length), attention_mask], dim=1)
            if attention_mask.size(1) != total:
                raise InputError(f"attention_mask has {attention_mask.size(1)} columns; it must cover the "
                                 f"{total} tokens (cache + new).")
            if attention_mask.device.type != "meta" and bool(attention_mask.all()):
                attention_mask = None
        if attention_mask is None:
            if not causal or length == 1:  # one new token may attend to everything before it
                return AttentionMask(None, False)
            if past_length == 0:
                return AttentionMask(None, True)
            keep = torch.ones(length, total, dtype=torch.bool, device=device).tril(past_length)  # (T, S)
            return AttentionMask(keep[None, None], False)
        keys = attention_mask.bool()  # (B, S)
        keep = keys[:, None, None, :]  # (B, 1, 1, S)
        if causal:
            keep = keep & torch.ones(length, total, dtype=torch.bool, device=device).tril(past_length)
        # a row with nothing to attend to (a left pad in a decoder) would give NaN: let it see everything;
        # its output is never read
        keep = keep | ~keep.any(dim=-1, keepdim=True)
        return AttentionMask(keep, False, key_padding=keys)

    @staticmethod
    def row_index(rows: torch.Tensor, *, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``output_rows`` (B, T) bool: (query_index (B, M), the positions the last layer computes, in
        order, padded with repeats; pick (B, M) bool, which of those are output rows). ``first`` adds position
        0 to every sequence (the pooler reads it), which then is column 0 of ``query_index``."""
        wanted = rows.clone()
        if first:
            wanted[:, 0] = True
        counts = wanted.sum(1)  # (B,)
        width = max(int(counts.max()), 1)
        # a stable descending sort of 0/1 puts the wanted positions first, in increasing order
        index = torch.sort(wanted.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
        valid = torch.arange(width, device=rows.device)[None, :] < counts[:, None]  # (B, M)
        return index, valid & rows.gather(1, index)

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               where: Unpadding | None) -> torch.Tensor:
        """Embeddings (B, T, H); with ``where`` those of the real tokens only, (N, H)."""
        if where is None:
            return self.embeddings(input_ids, position_ids=position_ids, token_type_ids=token_type_ids)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:  # (B, T) -> (1, N)
            return None if t is None else t.expand_as(input_ids).reshape(-1).index_select(0, where.index)[None]

        return self.embeddings(pick(input_ids), position_ids=pick(position_ids),
                               token_type_ids=pick(token_type_ids))[0]  # (N, H)

    # ------------------------------------------------------------------ forward
    def run_layers(self, x: torch.Tensor, mask: AttentionMask, pasts: Sequence[Any] | None = None, *,
                   use_cache: bool = False, output_attentions: bool = False, output_hidden_states: bool = False,
                   last_rows: torch.Tensor | None = None) -> LayerOutputs:
        """The N blocks over ``x`` (B, T, H): layer i runs stored layer ``config.layer_index(i)`` with
        ``pasts[i]`` (a tuple ``(k, v)``, or a cache slot written in place). ``last_rows`` (B, M): the last
        layer computes only those query positions (x becomes (B, M, H)). ``forward`` and the fixed-shape
        decode step (``lmforge.generation.static``) both run their layers here."""
        c = self.config
        if c.reversible:
            return self.run_reversible_layers(x, mask, pasts, use_cache=use_cache, output_attentions=output_attentions,
                                              output_hidden_states=output_hidden_states, last_rows=last_rows)
        hidden_states: list[torch.Tensor] = [x] if output_hidden_states else []
        attentions: list[torch.Tensor] = []
        presents: list[KV] = []
        for i in range(c.num_layers):
            layer = self.layers[c.layer_index(i)]
            rows = last_rows if i == c.num_layers - 1 else None
            past = pasts[i] if pasts is not None else None
            if self.gradient_checkpointing and self.training and not use_cache:
                x, present, probs = checkpoint(layer, x, mask=mask, past=past, use_cache=False,
                                               output_attentions=output_attentions, query_index=rows,
                                               use_reentrant=False)
            else:
                x, present, probs = layer(x, mask=mask, past=past, use_cache=use_cache,
                                          output_attentions=output_attentions, query_index=rows)
            if use_cache:
                presents.append(present)
            if output_attentions:
                attentions.append(probs)
            if output_hidden_states:
                hidden_states.append(x)
        return LayerOutputs(x, presents, attentions, hidden_states)

    def run_reversible_layers(self, x: torch.Tensor, mask: AttentionMask, pasts: Sequence[Any] | None, *,
                              use_cache: bool, output_attentions: bool, output_hidden_states: bool,
                              last_rows: torch.Tensor | None) -> LayerOutputs:
        """``reversible=True``: both streams start as ``x``; the output is concat(y1, y2) (B, T, 2H). Training
        runs ``ReversibleStack`` (inputs recomputed in backward); caches, maps and evaluation the plain loop."""
        c = self.config
        blocks = [self.layers[c.layer_index(i)] for i in range(c.num_layers)]
        extras = use_cache or output_attentions or output_hidden_states or pasts is not None
        if torch.is_grad_enabled() and not extras and self.reversible_backward:
            y1, y2 = run_reversible(blocks, x, x, mask=mask)
            out = LayerOutputs(torch.cat([y1, y2], dim=-1), [], [], [])
        else:
            plain = run_plain(blocks, x, x, mask=mask, pasts=pasts, use_cache=use_cache,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states)
            out = LayerOutputs(torch.cat([plain.y1, plain.y2], dim=-1), plain.presents, plain.attentions,
                               plain.hidden_states)
        if last_rows is not None:  # every position was computed: keep the asked rows (B, M, 2H)
            out = out._replace(hidden=gather_rows(out.hidden, last_rows))
        return out

    def pad_to_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None,
                      output_rows: torch.Tensor | None, *, cached: bool) -> tuple[Any, ...] | None:
        """The "lsh" / "local" kinds need lengths that are a multiple of their chunk lengths (the lcm when both are
        used) once above the shortest chunk: pad at the end with masked pad tokens, as HF ReformerModel does in
        evaluation (it refuses in training; here training pads too, the pads are masked keys and the outputs
        and new cache entries are cut back). None when no padding is needed or when decoding from a cache
        (the cached path of "local" needs no chunks)."""
        c = self.config
        B, T = input_ids.shape
        multiple = c.chunk_multiple
        if cached or T <= c.min_chunk_length or T % multiple == 0:
            return None
        extra = multiple - T % multiple
        if T + extra > c.max_length:
            raise InputError(f"a sequence of {T} tokens is padded to {T + extra} (a multiple of the chunk length "
                             f"{multiple} of the lsh / local layers), more than this model's {c.max_length} "
                             f"positions; pass at most {c.max_length - c.max_length % multiple} tokens.")
        _warn_padding(T, T + extra, multiple)
        pad_id = c.pad_token_id if c.pad_token_id is not None else 0
        input_ids = F.pad(input_ids, (0, extra), value=pad_id)
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=input_ids.device)
        attention_mask = F.pad(attention_mask, (0, extra), value=0)
        if token_type_ids is not None:
            token_type_ids = F.pad(token_type_ids, (0, extra), value=0)
        if position_ids is not None:  # continue each row's numbering (HF: arange from the length)
            more = torch.arange(T, T + extra, device=input_ids.device) + c.position_offset
            position_ids = torch.cat([position_ids, more.expand(B, -1)], dim=1)
        if output_rows is not None:
            output_rows = F.pad(output_rows, (0, extra), value=False)
        return input_ids, attention_mask, token_type_ids, position_ids, output_rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                past_key_values: tuple[KV, ...] | KVCache | None = None, use_cache: bool = False,
                output_hidden_states: bool = False, output_attentions: bool = False,
                output_rows: torch.Tensor | None = None, pool: bool = True,
                first_token_only: bool = False) -> ModelOutput:
        """``past_key_values``: the tuple cache of the contract, or a preallocated ``KVCache``, which every
        layer writes in place (whatever ``use_cache`` says) and which comes back as the output's cache.
        ``pool=False``: no pooler_output (a training loss that never reads it). ``first_token_only``: the last
        layer computes position 0 alone (what a [CLS] classifier reads; every position is still a key / value):
        last_hidden_state is (B, 1, H), the pooler the same."""
        # output_rows (B, T) bool: only those positions' final hidden states are wanted (the masked positions
        # of an MLM training step). The last layer computes them alone (every position still serves as a key
        # and value) and last_hidden_state is (N, H) = h[output_rows]; the pooler still reads position 0.
        c = self.config
        if c.chunk_multiple > 1 and input_ids.dim() == 2:
            length = input_ids.size(1)
            padded = self.pad_to_chunks(input_ids, attention_mask, token_type_ids, position_ids, output_rows,
                                        cached=past_key_values is not None)
            if padded is not None:
                out = self.forward(*padded[:4], use_cache=use_cache, output_hidden_states=output_hidden_states,
                                   output_attentions=output_attentions, output_rows=padded[4], pool=pool,
                                   first_token_only=first_token_only)
                if output_rows is None:
                    out.last_hidden_state = out.last_hidden_state[:, :length]
                if output_hidden_states:
                    out.hidden_states = tuple(h[:, :length] for h in out.hidden_states)
                if use_cache:  # the pads' keys / values are not part of the sequence
                    out.past_key_values = tuple(None if kv is None else (kv[0][:, :, :length], kv[1][:, :, :length])
                                                for kv in out.past_key_values)
                return out
        B, T = input_ids.shape if input_ids.dim() == 2 else (0, 0)
        if past_key_values is not None and "lsh" in c.attention_kinds:
            raise InputError("attention_kind='lsh' has no KV cache: its buckets are recomputed over the whole "
                             "sequence. Generate with use_cache=False (lmforge.generate does so for lsh models: each "
                             "step recomputes the prefix), or use 'local' / 'dense' layers for cached decoding.")
        if past_key_values is not None and len(past_key_values) != c.num_layers:
            raise InputError(f"past_key_values has {len(past_key_values)} layers; the model has {c.num_layers}.")
        static = isinstance(past_key_values, KVCache)
        if static:
            past_key_values.check_room(T)
            past_length = past_key_values.length
        else:
            past_length = past_key_values[0][0].size(2) if past_key_values else 0
        if position_ids is None and input_ids.dim() == 2:
            position_ids = self.embeddings.position_ids(input_ids, past_length)
        self.check_inputs(input_ids, position_ids, past_length, token_type_ids)
        mask = self.attention_mask(attention_mask, B, T, past_length, input_ids.device)
        if first_token_only and (output_rows is not None or c.causal or past_key_values is not None or use_cache
                                 or output_hidden_states or output_attentions):
            raise InputError("first_token_only is for encoder classification steps: no output_rows, KV cache, "
                             "hidden states or attention maps with it.")
        where = None
        if self.padding_free and mask.key_padding is not None and past_key_values is None and not (
                use_cache or output_hidden_states or output_attentions or output_rows is not None) and all(
                type(layer.attn) is DenseAttention for layer in self.layers) and not c.reversible:  # sparse kinds subclass it
            where = mask.unpadded = unpadding(mask.key_padding, causal=c.causal)
        x = self._embed(input_ids, position_ids, token_type_ids, where)  # (B, T, H), or (N, H) unpadded
        query_index = pick = None
        if output_rows is not None:
            if c.causal or past_key_values is not None or use_cache or output_hidden_states or output_attentions:
                raise InputError("output_rows is for encoder training steps: no KV cache, hidden states or "
                                 "attention maps with it.")
            query_index, pick = self.row_index(output_rows.bool(), first=pool and self.pooler is not None)
        elif first_token_only and where is None:
            query_index = torch.zeros(B, 1, dtype=torch.long, device=input_ids.device)  # (B, 1): position 0
        elif first_token_only and bool(mask.key_padding[:, 0].all()):  # (a padded position 0: every row computed)
            # (B,): the row of each sequence's position 0 among the N real tokens
            query_index = torch.searchsorted(where.index, torch.arange(B, device=input_ids.device) * T)

        pasts = None
        if past_key_values:
            pasts = [LayerSlot(past_key_values, i) for i in range(c.num_layers)] if static else past_key_values
        layers = self.run_layers(x, mask, pasts, use_cache=use_cache, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, last_rows=query_index)
        x = layers.hidden
        hidden_states = layers.hidden_states
        if static:
            past_key_values.advance(T)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if output_hidden_states:  # HF GPT-2: the last entry is the normed output
                hidden_states[-1] = x
        if where is not None and query_index is not None:
            x = x[:, None]  # (B, 1, H): position 0 of each sequence
        elif where is not None:
            x = repad(x, where)  # (B, T, H), zeros at the padded positions
        pooled = self.pooler(x) if pool and self.pooler is not None else None
        if pick is not None:
            x = x[pick]  # (N, H)
        return ModelOutput(last_hidden_state=x, pooler_output=pooled,
                           past_key_values=past_key_values if static else tuple(layers.presents) if use_cache else None,
                           hidden_states=tuple(hidden_states) if output_hidden_states else None,
                           attentions=tuple(layers.attentions) if output_attentions else None)


@functools.lru_cache(maxsize=None)
def _warn_padding(length: int, padded: int, multiple: int) -> None:
    # once per length: the cost is real (padded positions are computed) but expected
    warnings.warn(f"the input of {length} tokens is padded to {padded}, a multiple of the chunk length {multiple} of "
                  "the lsh / local attention layers (as HF Reformer does); pass such lengths to avoid the extra work.",
                  stacklevel=4)
