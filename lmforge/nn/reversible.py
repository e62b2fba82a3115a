"""Reversible residual layers (RevNet, Gomez et al. 2017; Reformer, Kitaev et al. 2020, section 3).

A stack of pre-LN blocks runs on two streams, both the embeddings at the start (HF ``ReformerEncoder``
concatenates the input with itself):

    y1 = x1 + Attn(x2)        Attn(x) = dropout(attention(LN(x)))
    y2 = x2 + MLP(y1)         MLP(x)  = dropout(mlp(LN(x)))

so the inputs follow from the outputs: x2 = y2 - MLP(y1), x1 = y1 - Attn(x2). ``ReversibleStack`` runs the
forward without keeping any layer's activations (only the last outputs) and its backward walks the layers
from the top, recomputing each layer's inputs and re-running its two sublayers under autograd to get the
gradients (HF ``_ReversibleFunction`` / ``ReformerLayer.backward_pass``). Dropout masks and LSH rotations drawn
from torch's generator are replayed exactly: the generator state before each sublayer is saved in the forward
and restored (in a forked RNG scope) for the recomputation, so the gradients are those of the same stack run
with stored activations (``run_plain``; tests/nn/test_reversible.py compares them in float64 with dropout).

Layer sharing (ALBERT's ``num_layer_groups``) works unchanged: a stored layer applied twice is recomputed
twice and its parameter gradients add up.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


class _Replay:
    """Restore a saved generator state inside a forked RNG scope (the caller's generator is left as it was)."""

    def __init__(self, state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
        self.state, self.device = state, device
        self.fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def __enter__(self) -> None:
        self.fork.__enter__()
        torch.set_rng_state(self.state[0])
        if self.state[1] is not None:
            torch.cuda.set_rng_state(self.state[1], self.device)

    def __exit__(self, *exc: Any) -> None:
        self.fork.__exit__(*exc)


class PlainOutputs(NamedTuple):
    y1: torch.Tensor
    y2: torch.Tensor
    presents: list[Any]  # per layer (k, v) when use_cache with a tuple cache
    attentions: list[torch.Tensor]  # per layer when output_attentions
    hidden_states: list[torch.Tensor]  # concat(x1, x2) before the first layer and after each, when asked


def run_plain(blocks: Sequence[nn.Module], x1: torch.Tensor, x2: torch.Tensor, *, mask: Any,
              pasts: Sequence[Any] | None = None, use_cache: bool = False, output_attentions: bool = False,
              output_hidden_states: bool = False) -> PlainOutputs:
    """The same two-stream stack under ordinary autograd (activations stored): evaluation, KV caches,
    attention maps, and the reference the reversible backward is tested against."""
    presents, attentions = [], []
    hidden_states = [torch.cat([x1, x2], dim=-1)] if output_hidden_states else []
    for i, block in enumerate(blocks):
        x1, present, probs = block.attention_branch(x2, residual=x1, mask=mask, use_cache=use_cache,
                                                    past=pasts[i] if pasts is not None else None,
                                                    output_attentions=output_attentions)
        x2 = block.mlp_branch(x1, residual=x2)
        presents.append(present)
        if output_attentions:
            attentions.append(probs)
        if output_hidden_states:
            hidden_states.append(torch.cat([x1, x2], dim=-1))
    return PlainOutputs(x1, x2, presents, attentions, hidden_states)


class ReversibleStack(torch.autograd.Function):
    """``apply(x1, x2, blocks, kwargs, *params)`` -> (y1, y2); ``params``: every parameter of ``blocks``, inputs so
    that the backward runs whenever one needs a gradient (even with frozen embeddings)."""

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, blocks: Sequence[nn.Module], kwargs: dict[str, Any],
                *params: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        with torch.no_grad():
            for block in blocks:
                attn_state = _rng_state(x1.device)
                x1 = block.attention_branch(x2, residual=x1, **kwargs)[0]
                mlp_state = _rng_state(x1.device)
                x2 = block.mlp_branch(x1, residual=x2)
                states.append((attn_state, mlp_state))
        ctx.blocks, ctx.kwargs, ctx.states, ctx.params = blocks, kwargs, states, params
        ctx.save_for_backward(x1, x2)  # the only activations kept: the last layer's outputs
        return x1, x2

    @staticmethod
    def backward(ctx: Any, dy1: torch.Tensor, dy2: torch.Tensor) -> tuple[Any, ...]:
        # The parameters' gradients are accumulated into their .grad by nested backward calls, layer by layer
        # (as HF's _ReversibleFunction and torch's reentrant checkpoint do), so no more than one layer's worth
        # of gradients is in flight: returning them from here would hold every layer's at once. As with
        # reentrant checkpointing, this supports loss.backward() (and DDP), not torch.autograd.grad(params).
        y1, y2 = ctx.saved_tensors
        device = y1.device
        for block, (attn_state, mlp_state) in zip(reversed(ctx.blocks), reversed(ctx.states)):
            # x2 = y2 - MLP(y1); backward through the MLP branch gives d/dy1 and the MLP's parameter gradients
            with torch.enable_grad(), _Replay(mlp_state, device):
                y1 = y1.detach().requires_grad_(True)
                g = block.mlp_branch(y1)
                torch.autograd.backward(g, dy2)
            with torch.no_grad():
                x2 = y2 - g
                dy1 = dy1 + y1.grad  # y1 feeds the MLP and is the first stream's output
            # x1 = y1 - Attn(x2)
            with torch.enable_grad(), _Replay(attn_state, device):
                x2 = x2.detach().requires_grad_(True)
                f = block.attention_branch(x2, **ctx.kwargs)[0]
                torch.autograd.backward(f, dy1)
            with torch.no_grad():
                x1 = y1 - f
                dy2 = dy2 + x2.grad  # dL/dx2: the skip into y2 plus the attention branch
            y1, y2 = x1.detach(), x2.detach()
        return (dy1, dy2, None, None, *(None for _ in ctx.params))


def run_reversible(blocks: Sequence[nn.Module], x1: torch.Tensor, x2: torch.Tensor, *, mask: Any,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y1, y2) of the stack through ``ReversibleStack`` (training: no activations kept)."""
    params = list(dict.fromkeys(p for block in blocks for p in block.parameters() if p.requires_grad))
    return ReversibleStack.apply(x1, x2, list(blocks), {"mask": mask}, *params)
