"""What generation hands back: ``GenerationOutput``, the ``Streamer`` protocol that receives tokens as they are
made, and ``GenerationWarning`` for a call that went on but not as asked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class GenerationWarning(UserWarning):
    """Generation went on but not as asked (e.g. it stopped at the model's position limit)."""


class Streamer(Protocol):
    """Receives each step's new tokens as they are made (the CLI prints them)."""

    def put(self, tokens: torch.Tensor) -> None:  # (B,) the tokens just chosen
        ...

    def end(self) -> None:
        ...


@dataclass
class GenerationOutput:
    """What ``generate(..., return_scores=True)`` returns.

    ``tokens``: (B, N) the new tokens; a row that finished early (eos / stop string) is filled with the
    pad id after it. ``scores``: greedy / sampling -> (B, N) log-probability of each chosen token under
    the processed distribution (0 on filler); beam search -> (B,) the final beam score (sum of
    log-probabilities / length, HF's ``sequences_scores``). ``stopped``: per row, why it ended:
    "eos", "stop", "length" or "position_limit".
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    stopped: list[str]


__all__ = ["GenerationOutput", "GenerationWarning", "Streamer"]
