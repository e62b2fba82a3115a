"""Activation registry: ModelConfig.activation / mlm_activation / classifier_activation name -> function."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-1/2, ALBERT: HF "gelu_new" / "gelu_pytorch_tanh")."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact, erf-based (BERT, RoBERTa, ELECTRA, DistilBERT)
    "gelu_new": gelu_new,
    "relu": F.relu,
    "tanh": torch.tanh,  # RoBERTa's classification head
}


class Activation(torch.nn.Module):
    """A registry activation as a module (so it shows in ``print(model)``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name
