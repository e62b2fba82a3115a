"""Checks and shapes of ``generate``'s inputs: a LEFT-padded prompt batch, position ids from its mask, and the
room the model's position table leaves for new tokens."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from lmforge.errors import InputError
from lmforge.generation.output import GenerationWarning


def prepare_prompts(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    max_new_tokens: int, truncate_prompt: bool) -> tuple[torch.Tensor, torch.Tensor | None, int, bool]:
    """Validate the prompt batch; returns (ids, mask or None, max_new_tokens capped, capped?)."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = attention_mask.unsqueeze(0) if attention_mask is not None else None
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be a (batch, length) tensor with length >= 1, got shape "
                         f"{tuple(input_ids.shape)}.")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise InputError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}.")
        attention_mask = attention_mask.to(device)
        if bool(attention_mask.all()):
            attention_mask = None  # no padding: skip mask building entirely
        elif not bool(attention_mask[:, -1].all()):
            raise InputError("generation needs LEFT-padded prompts (padding at the start of each row, the "
                             "last column all real tokens); tokenize with padding_side='left'.")
    limit = int(model.config.max_positions)
    length = input_ids.shape[1]
    if length >= limit:
        if not truncate_prompt:
            check_prompt_length(length, limit)
        keep = max(1, limit - max(1, min(max_new_tokens, limit // 2)))
        input_ids = input_ids[:, -keep:]
        attention_mask = attention_mask[:, -keep:] if attention_mask is not None else None
        warnings.warn(f"the prompt was left-truncated from {length} to {keep} tokens to fit the "
                      f"{limit}-position context.", GenerationWarning, stacklevel=3)
        length = keep
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
    capped = length + max_new_tokens > limit
    if capped:
        warnings.warn(f"max_new_tokens={max_new_tokens} goes past the model's {limit} positions "
                      f"(prompt {length} tokens): generation stops after {limit - length} new tokens.",
                      GenerationWarning, stacklevel=3)
        max_new_tokens = limit - length
    return input_ids, attention_mask, max_new_tokens, capped


def check_prompt_length(length: int, limit: int) -> None:
    """InputError when a prompt of ``length`` tokens leaves no room in a ``limit``-position context."""
    if length >= limit:
        what = (f"the prompt has {length} tokens but the model's context is {limit} positions, leaving no room to "
                "generate; shorten it or pass")
        raise InputError(f"{what} truncate_prompt=True to keep its last tokens.",
                         cli=f"{what} --truncate-prompt to keep its last tokens.")


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads get 0 too)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def token_ids(ids: int | Sequence[int] | None) -> list[int]:
    """``eos_token_id`` as a list: None -> [], one id -> [id]."""
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


__all__ = ["check_prompt_length", "positions", "prepare_prompts", "token_ids"]
