"""Token + position + segment embeddings, the embedding LayerNorm, and ALBERT / ELECTRA's E -> H projection.

Position kinds are a registry: "learned" (a trained table) or "sinusoidal" (Vaswani et al.'s fixed table,
stored as a non-persistent buffer). RoBERTa numbering is ``ModelConfig.position_offset``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.dropout import Dropout
from lmforge.nn.registry import Registry


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim): sin on even columns, cos on odd ones (Vaswani et al. 2017; DistilBERT's option)."""
    pos = torch.arange(positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class LearnedPositions(nn.Embedding):
    """A trained (P, E) table: state-dict name ``body.embeddings.position.weight``."""

    def __init__(self, config: ModelConfig) -> None:
        # RoBERTa numbering puts every pad at position_offset - 1, a row HF gives padding_idx (no gradient, starts
        # at 0) as it does the word table's [PAD] row (pad_row below)
        pad = config.position_offset - 1 if config.position_offset > 0 and config.pad_token_id is not None else None
        super().__init__(config.max_positions, config.embed_size, padding_idx=pad)


class SinusoidalPositions(nn.Module):
    """A fixed table, not a parameter and not saved (it is a function of the sizes)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(config.max_positions, config.embed_size), persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the table (a model built on the meta device and then allocated calls this)."""
        with torch.no_grad():
            self.table.copy_(sinusoidal_table(*self.table.shape))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


class AxialPositions(nn.Module):
    """Reformer's factorised positions (HF ``AxialPositionEmbeddings``): position p of a grid ``axial_pos_shape``
    (d1, d2, ...) is the concatenation of one row per axis, of ``axial_pos_embds_dim`` (e1, e2, ...) columns each:
    d1 * e1 + d2 * e2 + ... parameters instead of d1 * d2 * ... * E. State-dict names
    ``body.embeddings.position.weights.{i}``, shaped (1, .., d_i, .., 1, e_i) as HF's (without the batch axis).
    Any length up to max_positions works (HF requires exactly the grid's product in training)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.shape = list(config.axial_pos_shape or [])
        self.weights = nn.ParameterList()
        for axis, (size, dim) in enumerate(zip(self.shape, config.axial_pos_embds_dim or [])):
            view = [1] * len(self.shape)
            view[axis] = size
            self.weights.append(nn.Parameter(torch.randn(*view, dim) * config.initializer_range))

    def table(self) -> torch.Tensor:
        """(max_positions, E): every position's vector, in row-major order of the grid."""
        parts = [w.expand(*self.shape, w.size(-1)) for w in self.weights]
        return torch.cat(parts, dim=-1).reshape(-1, sum(w.size(-1) for w in self.weights))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table()[position_ids]


# ModelConfig.position_kind -> module mapping position ids (B, L) to (B, L, E)
POSITION_KINDS: Registry[type[nn.Module]] = Registry("position_kind", {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "axial": AxialPositions,  # Reformer (axial_pos_shape, axial_pos_embds_dim)
})


# HF's encoders give the word table padding_idx = pad_token_id (modeling_bert.py BertEmbeddings, RoBERTa, ALBERT,
# ELECTRA, DistilBERT, BigBird): the [PAD] row gets no gradient from the lookup and starts at 0. Its decoders (GPT-1,
# GPT-2, GPT-Neo) and Reformer do not. tests/parity/test_hf_training.py trains both side by side.
PAD_ROW_FAMILIES = frozenset({"bert", "roberta", "albert", "electra", "distilbert", "bigbird"})


def pad_row(config: ModelConfig) -> int | None:
    """The word-table row that gets no gradient (nn.Embedding padding_idx), as HF's model of the family has it."""
    pad = config.pad_token_id
    return pad if config.family in PAD_ROW_FAMILIES and pad is not None and 0 <= pad < config.vocab_size else None


class Embeddings(nn.Module):
    """Sum of word, position and segment embeddings, then LayerNorm, dropout and the E -> H projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embed_size
        self.word = nn.Embedding(config.vocab_size, e, padding_idx=pad_row(config))
        self.position = POSITION_KINDS[config.position_kind](config)
        self.segment = nn.Embedding(config.type_vocab_size, e) if config.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(e, eps=config.layer_norm_eps) if config.has_embedding_norm else None
        p = config.embedding_dropout if config.embedding_dropout is not None else config.hidden_dropout
        self.dropout = Dropout(p)
        self.project = nn.Linear(e, config.hidden_size) if config.has_embedding_project else None

    def position_ids(self, input_ids: torch.Tensor, past_length: int) -> torch.Tensor:
        """Default positions (B, L): offset + past_length + 0, 1, ...; RoBERTa numbering skips pads."""
        c = self.config
        if c.position_offset > 0 and c.pad_token_id is not None:
            # HF RoBERTa: real tokens count up from the offset, pads sit at offset - 1 (= padding_idx)
            real = input_ids.ne(c.pad_token_id).long()
            return (torch.cumsum(real, dim=1) + past_length) * real + (c.position_offset - 1)
        positions = torch.arange(past_length, past_length + input_ids.size(1), device=input_ids.device)
        return (positions + c.position_offset).unsqueeze(0).expand_as(input_ids)

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word(input_ids) + self.position(position_ids)  # (B, L, E)
        if self.segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.segment(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)  # (B, L, H)
        return x
