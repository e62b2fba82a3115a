"""The logits processors of one decoding step, in HF transformers' order: repetition penalty, then (when
sampling) temperature, top-k and top-p; plus the check of their settings.

- repetition penalty (CTRL, Keskar et al. 2019): a logit of a token already in the sequence is divided
  by the penalty when positive and multiplied by it when negative;
- sampling: logits / temperature, then top-k (keep the k largest), then top-p (keep the smallest set of
  most likely tokens whose probability sums to >= p), then one draw from the softmax.
"""
from __future__ import annotations

import torch

from lmforge.errors import InputError

FILTER = float("-inf")  # the value a filtered-out logit gets (probability 0 after softmax)


def check_sampling_args(*, do_sample: bool, temperature: float, top_k: int, top_p: float,
                        num_beams: int, repetition_penalty: float, max_new_tokens: int) -> None:
    """Raise InputError for decoding settings that have no meaning (with the flag names for the CLI)."""
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}.",
                         cli=f"--max-new-tokens must be >= 0, got {max_new_tokens}.")
    if do_sample and not temperature > 0:
        raise InputError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False "
                         "(greedy) for deterministic output.",
                         cli=f"--temperature must be > 0 when sampling, got {temperature}; for deterministic "
                             "output decode greedily (--greedy, or no sampling flag).")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p} (1 disables nucleus filtering).",
                         cli=f"--top-p must be in (0, 1], got {top_p} (1 disables nucleus filtering).")
    if top_k < 0:
        raise InputError(f"top_k must be >= 0, got {top_k} (0 disables top-k filtering).",
                         cli=f"--top-k must be >= 0, got {top_k} (0 disables top-k filtering).")
    if num_beams < 1:
        raise InputError(f"num_beams must be >= 1, got {num_beams}.", cli=f"--num-beams must be >= 1, got {num_beams}.")
    if do_sample and num_beams > 1:
        raise InputError("beam search with sampling is not supported; use either num_beams > 1 "
                         "(deterministic) or do_sample=True with num_beams=1.",
                         cli="beam search with sampling is not supported; give either --num-beams N "
                             "(deterministic) or the sampling flags (--do-sample, --temperature, --top-k, --top-p).")
    if not repetition_penalty > 0:
        raise InputError(f"repetition_penalty must be > 0, got {repetition_penalty} (1 = no penalty).",
                         cli=f"--repetition-penalty must be > 0, got {repetition_penalty} (1 = no penalty).")


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's rule on the tokens of ``seen`` (B, T): positive logits / penalty, negative ones * penalty."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(1, seen)  # (B, T)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seen, picked)


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th kept too); k = 0 keeps all."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, FILTER)


def top_p_filter(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probabilities sum to >= p; the most likely token is always kept."""
    if p >= 1.0:
        return scores
    sorted_logits, order = torch.sort(scores, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # ascending order: a token goes when the mass strictly below-and-including it is <= 1 - p, i.e. the
    # tokens above it already reach p
    remove = cumulative <= (1 - p)
    remove[..., -1] = False
    return scores.masked_fill(remove.scatter(-1, order, remove), FILTER)


def process_logits(scores: torch.Tensor, seen: torch.Tensor, *, do_sample: bool, temperature: float,
                   top_k: int, top_p: float, repetition_penalty: float) -> torch.Tensor:
    """One step's processors in HF's order: repetition penalty, then (sampling) temperature, top-k, top-p."""
    scores = apply_repetition_penalty(scores, seen, repetition_penalty)
    if do_sample:
        if temperature != 1.0:
            scores = scores / temperature
        scores = top_p_filter(top_k_filter(scores, top_k), top_p)
    return scores


__all__ = ["FILTER", "apply_repetition_penalty", "check_sampling_args", "process_logits", "top_k_filter",
           "top_p_filter"]
