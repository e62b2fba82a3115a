"""A head- or neuron-pruned lmforge state dict zero-padded back to the unpruned shapes, for HF export.

Stored layer i of a pruned model keeps ``layer_heads[i]`` heads (qkv (3 n hs, H), out (H, n hs)) and
``layer_ffn_sizes[i]`` MLP neurons (fc1 (f, H), fc2 (H, f)). HF configs have one head count and one width
for every layer, so the missing heads / neurons come back as zeros: a zero head's values are 0 and its
out-projection columns are 0, a zero neuron's fc2 column is 0, so each adds exactly nothing and HF computes
the pruned model's function (tests/compression/test_export.py checks the logits against transformers).
"""
from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.models.hf.base import StateDict


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(rows - t.size(0), *t.shape[1:])]) if t.size(0) < rows else t


def _pad_cols(t: torch.Tensor, cols: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(t.size(0), cols - t.size(1))], dim=1) if t.size(1) < cols else t


def unpruned(state: StateDict, config: ModelConfig) -> tuple[StateDict, ModelConfig]:
    """(state dict, config) with every stored layer at ``num_heads`` heads and ``ffn_size`` neurons; the
    kept heads / neurons come first in each layer, zeros after. Unpruned models come back unchanged."""
    if config.layer_heads is None and config.layer_ffn_sizes is None:
        return state, config
    H, F = config.hidden_size, config.ffn_size
    out = dict(state)
    for i in range(config.num_stored_layers):
        p = f"body.layers.{i}."
        if config.heads_in_layer(i) < config.num_heads:
            for name in ("weight", "bias"):
                if f"{p}attn.qkv.{name}" not in state:  # qkv_bias=False
                    continue
                q, k, v = state[f"{p}attn.qkv.{name}"].chunk(3, dim=0)  # each (n hs, ...)
                out[f"{p}attn.qkv.{name}"] = torch.cat([_pad_rows(t, H) for t in (q, k, v)])  # (3H, ...)
            out[f"{p}attn.out.weight"] = _pad_cols(state[f"{p}attn.out.weight"], H)  # (H, H)
        if config.ffn_in_layer(i) < F:
            out[f"{p}mlp.fc1.weight"] = _pad_rows(state[f"{p}mlp.fc1.weight"], F)  # (F, H)
            out[f"{p}mlp.fc1.bias"] = _pad_rows(state[f"{p}mlp.fc1.bias"], F)
            out[f"{p}mlp.fc2.weight"] = _pad_cols(state[f"{p}mlp.fc2.weight"], F)  # (H, F)
    return out, config.replace(layer_heads=None, layer_ffn_sizes=None)


__all__ = ["unpruned"]
