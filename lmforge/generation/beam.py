"""Beam search: HF transformers' algorithm (length_penalty=1, early_stopping=False), batched and vectorised.

Each step keeps the top 2 * num_beams continuations of every prompt (so that num_beams survive when some end
with eos); continuations that end (eos, or the last step) become finished hypotheses scored
sum(log p) / new_length when they rank among the top num_beams; the search stops for a prompt when no
running beam can still beat its worst finished hypothesis.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmforge.generation.inputs import positions
from lmforge.generation.output import GenerationOutput
from lmforge.generation.sampling import apply_repetition_penalty
from lmforge.generation.step import reorder_cache

NEVER = -1e9  # the score of a beam / hypothesis that must not be picked


@dataclass
class Candidates:
    """The best ``keep`` one-token continuations of each prompt's running beams at one step."""

    scores: torch.Tensor  # (B, keep) the running beam's score + log p of the token
    source: torch.Tensor  # (B, keep) the running beam each one extends
    tokens: torch.Tensor  # (B, keep)
    sequences: torch.Tensor  # (B, keep, max_len) the extended sequences
    ends: torch.Tensor  # (B, keep) bool: the token is an eos, or the sequence is full


@dataclass
class Beams:
    """The search state of B prompts: K running beams and the K best finished hypotheses per prompt."""

    running: torch.Tensor  # (B, K, max_len) prompt + new tokens of the running beams
    running_scores: torch.Tensor  # (B, K) sum of log p
    done: torch.Tensor  # (B, K, max_len) finished hypotheses
    done_scores: torch.Tensor  # (B, K) sum of log p / new length
    finished: torch.Tensor  # (B, K) bool: a real hypothesis (else an empty slot)
    lengths: torch.Tensor  # (B, K) new tokens of each hypothesis
    improvable: torch.Tensor  # (B, 1) bool: a running beam may still beat the worst hypothesis

    @classmethod
    def start(cls, ids: torch.Tensor, *, num_beams: int, max_len: int, pad: int) -> Beams:
        B, L = ids.shape
        K, device = num_beams, ids.device
        running = torch.full((B, K, max_len), pad, dtype=torch.long, device=device)
        running[:, :, :L] = ids[:, None, :]
        running_scores = torch.zeros((B, K), device=device)
        running_scores[:, 1:] = NEVER  # only the first beam expands at step 0 (all beams are equal then)
        return cls(running, running_scores, running.clone(), torch.full((B, K), NEVER, device=device),
                   torch.zeros((B, K), dtype=torch.bool, device=device),
                   torch.zeros((B, K), dtype=torch.long, device=device),
                   torch.ones((B, 1), dtype=torch.bool, device=device))

    def expand(self, logp: torch.Tensor, *, cur: int, keep: int, eos: torch.Tensor | None) -> Candidates:
        """The top ``keep`` continuations of ``logp`` (B*K, V), the next token's log-probabilities at
        position ``cur``."""
        B, K, max_len = self.running.shape
        V = logp.shape[-1]
        total = (logp.view(B, K, V) + self.running_scores[:, :, None]).view(B, K * V)
        scores, index = torch.topk(total, keep, dim=1)  # (B, keep)
        source, tokens = index // V, index % V
        sequences = self.running.gather(1, source[:, :, None].expand(-1, -1, max_len)).clone()
        sequences[:, :, cur] = tokens
        ends = torch.full_like(tokens, cur + 1 >= max_len, dtype=torch.bool)
        if eos is not None:
            ends |= torch.isin(tokens, eos)
        return Candidates(scores, source, tokens, sequences, ends)

    def continue_with(self, c: Candidates) -> torch.Tensor:
        """The next running beams: the best K candidates that did not end. Returns (B, K) the beam each
        comes from (the cache rows to keep)."""
        K, max_len = self.running.shape[1:]
        live = c.scores + c.ends.float() * NEVER
        best = torch.topk(live, K, dim=1).indices  # (B, K)
        self.running = c.sequences.gather(1, best[:, :, None].expand(-1, -1, max_len))
        self.running_scores = live.gather(1, best)
        return c.source.gather(1, best)

    def add_finished(self, c: Candidates, *, new_len: int) -> None:
        """Merge the candidates that ended among the top K (of prompts still improvable) into the K best
        hypotheses so far, scored sum(log p) / new_len."""
        K, max_len = self.running.shape[1:]
        top_k = torch.arange(c.tokens.shape[1], device=c.tokens.device)[None, :] < K  # only the top K may finish
        ending = c.ends & top_k
        scores = c.scores / new_len + (~self.improvable).float() * NEVER + (~ending).float() * NEVER
        merged_scores = torch.cat([self.done_scores, scores], dim=1)
        best = torch.topk(merged_scores, K, dim=1).indices
        self.done = torch.cat([self.done, c.sequences], dim=1).gather(1, best[:, :, None].expand(-1, -1, max_len))
        self.done_scores = merged_scores.gather(1, best)
        self.finished = torch.cat([self.finished, ending], dim=1).gather(1, best)
        self.lengths = torch.cat([self.lengths, torch.full_like(c.tokens, new_len)], dim=1).gather(1, best)

    def update_improvable(self, new_len: int) -> None:
        """HF's early-stop heuristic (early_stopping=False): a prompt is done when its best running beam,
        scored at the current length, cannot beat its worst finished hypothesis."""
        best_running = self.running_scores[:, :1] / new_len
        worst_done = torch.where(self.finished, self.done_scores.min(dim=1, keepdim=True).values,
                                 torch.full_like(self.done_scores, NEVER))
        self.improvable &= (best_running > worst_done).any(dim=-1, keepdim=True)

    def output(self, *, prompt_len: int, eos: torch.Tensor | None, capped: bool) -> GenerationOutput:
        """The best hypothesis of each prompt, its score and why it ended."""
        L = prompt_len
        n = int(self.lengths[:, 0].max().item())
        stopped = []
        for row in range(self.done.shape[0]):
            last = int(self.lengths[row, 0].item())
            ended_eos = eos is not None and last > 0 and bool(torch.isin(self.done[row, 0, L + last - 1], eos))
            stopped.append("eos" if ended_eos else ("position_limit" if capped else "length"))
        return GenerationOutput(self.done[:, 0, L:L + n], self.done_scores[:, 0], stopped)


def beam_search(forward: Any, ids: torch.Tensor, mask: torch.Tensor | None, *, n_new: int, num_beams: int,
                eos: list[int], pad: int, repetition_penalty: float, capped: bool) -> GenerationOutput:
    """Up to ``n_new`` tokens for each prompt row of ``ids`` (B, L) by beam search; ``forward`` is the
    generation step (``EagerStep`` or ``StaticDecoder``) over the B * num_beams flattened beams."""
    B, L = ids.shape
    K = num_beams
    device = ids.device
    if n_new == 0:
        return GenerationOutput(torch.empty((B, 0), dtype=torch.long, device=device),
                                torch.zeros(B, device=device), ["length"] * B)
    keep = max(2, 1 + len(eos)) * K
    eos_t = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    max_len = L + n_new
    beams = Beams.start(ids, num_beams=K, max_len=max_len, pad=pad)

    flat_ids = ids.repeat_interleave(K, dim=0)  # (B*K, L)
    flat_mask = mask.repeat_interleave(K, dim=0) if mask is not None else None
    pos = positions(flat_mask) if flat_mask is not None else None
    cache = forward.new_cache(batch=B * K, capacity=max_len)
    logits, past = forward(flat_ids, flat_mask, pos, cache)
    offsets = torch.arange(B, device=device)[:, None] * K
    cur = L
    while True:
        logp = logits.float().log_softmax(dim=-1)  # (B*K, V); HF applies processors after log_softmax
        logp = apply_repetition_penalty(logp, beams.running[:, :, :cur].reshape(B * K, cur), repetition_penalty)
        candidates = beams.expand(logp, cur=cur, keep=keep, eos=eos_t)
        parent = (beams.continue_with(candidates) + offsets).flatten()  # (B*K,) cache rows to keep
        beams.add_finished(candidates, new_len=cur + 1 - L)
        cur += 1
        beams.update_improvable(cur - L)
        if not bool(beams.improvable.any()) or bool(candidates.ends.all()) or cur >= max_len:
            break
        past = reorder_cache(past, parent)
        flat_tokens = beams.running[:, :, cur - 1].reshape(B * K, 1)
        if flat_mask is not None:
            flat_mask = torch.cat([flat_mask.index_select(0, parent), torch.ones_like(flat_tokens)], dim=1)
            pos = positions(flat_mask)[:, -1:]
        logits, past = forward(flat_tokens, flat_mask, pos, past)
    return beams.output(prompt_len=L, eos=eos_t, capped=capped)


__all__ = ["Beams", "Candidates", "beam_search"]
