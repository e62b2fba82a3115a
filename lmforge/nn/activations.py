"""Activation registry: ModelConfig.activation / mlm_activation / classifier_activation name -> function."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmforge.nn.registry import Registry


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-1/2, ALBERT: HF "gelu_new" / "gelu_pytorch_tanh")."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("activation", {
    "gelu": F.gelu,  # exact, erf-based (BERT, RoBERTa, ELECTRA, DistilBERT)
    "gelu_new": gelu_new,
    "relu": F.relu,
    "tanh": torch.tanh,  # RoBERTa's classification head
})


class Activation(torch.nn.Module):
    """A registry activation as a module (so it shows in ``print(model)``); ``field`` names the ModelConfig
    field the name came from, for the error about an unknown one."""

    def __init__(self, name: str, field: str = "activation") -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS.lookup(name, field)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name
