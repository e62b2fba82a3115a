"""Structured pruning that removes work (attention heads, MLP neurons) and unstructured magnitude pruning.

* Importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", as HF's bertology script
  ``examples/research_projects/bertology/run_bertology.py``, ``compute_heads_importance``): a gate of 1 on
  every head's output (and every MLP neuron), the loss on a sample of data back-propagated to the gates,
  importance = the sum over batches of |d loss / d gate|. Head scores are L2-normalised per layer and
  min-max normalised over the model, as the script does; the least important heads over the whole model
  go, keeping at least one per layer. Neurons go per layer (the same fraction of every layer).
* Removal: a new, smaller model (``ModelConfig.layer_heads`` / ``layer_ffn_sizes``) whose state dict holds
  the kept rows and columns (``pruned_state``); it computes exactly what the original computes with the
  removed heads / neurons gated to 0 (tests/compression/test_prune.py).
* ``magnitude``: the smallest |w| of each Linear of the body set to 0 (L1 unstructured, per tensor). Dense
  kernels do the same work on zeros: it saves no time or bytes unless a sparse kernel is faster, which
  ``recipes/compress.py`` measures and reports.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lmforge.errors import InputError

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


# --------------------------------------------------------------------------- gates
class Gates:
    """Multiplicative gates on each stored layer's head outputs (the input of ``attn.out``) and MLP neurons
    (the input of ``mlp.fc2``), as forward pre-hooks: 1 changes nothing, 0 removes that head / neuron (HF's
    ``head_mask``). ``requires_grad`` makes them leaves whose gradients give the importance."""

    def __init__(self, model: nn.Module, *, requires_grad: bool = False) -> None:
        layers = model.body.layers
        self.heads = [torch.ones(layer.attn.num_heads, requires_grad=requires_grad) for layer in layers]
        self.neurons = [torch.ones(layer.mlp.fc1.out_features, requires_grad=requires_grad) for layer in layers]
        self.hooks = []
        for layer, head_gate, neuron_gate in zip(layers, self.heads, self.neurons):
            self.hooks.append(layer.attn.out.register_forward_pre_hook(self._head_hook(head_gate, layer.attn.head_size)))
            self.hooks.append(layer.mlp.fc2.register_forward_pre_hook(self._neuron_hook(neuron_gate)))

    @staticmethod
    def _head_hook(gate: torch.Tensor, head_size: int) -> Callable[..., tuple[torch.Tensor]]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            y = args[0]  # (..., nh * hs), heads side by side
            g = gate.to(y.dtype).repeat_interleave(head_size)  # (nh * hs,)
            return (y * g,)
        return hook

    @staticmethod
    def _neuron_hook(gate: torch.Tensor) -> Callable[..., tuple[torch.Tensor]]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            return (args[0] * gate.to(args[0].dtype),)  # (..., F)
        return hook

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks.clear()

    def __enter__(self) -> Gates:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def importance(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head importance per stored layer, neuron importance per stored layer): sum over batches of
    |d loss / d gate| with the model in eval mode (no dropout) and its weights frozen for the pass."""
    was_training = model.training
    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    head_scores = neuron_scores = None
    try:
        with Gates(model, requires_grad=True) as gates:
            head_scores = [torch.zeros_like(g) for g in gates.heads]
            neuron_scores = [torch.zeros_like(g) for g in gates.neurons]
            seen = 0
            for batch in batches:
                loss = loss_fn(model, batch)
                grads = torch.autograd.grad(loss, [*gates.heads, *gates.neurons], allow_unused=True)
                for acc, g in zip(head_scores + neuron_scores, grads):
                    if g is not None:
                        acc += g.abs()
                seen += 1
            if seen == 0:
                raise InputError("importance scoring got no batches of data; give more calibration data.")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return head_scores, neuron_scores


def normalize_head_scores(scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """bertology's normalisation: each layer's scores divided by their L2 norm, then min-max over the model."""
    by_layer = [s / (s.pow(2).sum().sqrt() + 1e-20) for s in scores]
    flat = torch.cat(by_layer)
    lo, hi = flat.min(), flat.max()
    return [(s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s) for s in by_layer]


# --------------------------------------------------------------------------- what to keep
def heads_to_keep(scores: Sequence[torch.Tensor], amount: float) -> list[list[int]]:
    """Kept head indices per stored layer after removing ``round(amount x all heads)`` of the least
    important over the model, never the last head of a layer. InputError when that cannot be done."""
    total = sum(len(s) for s in scores)
    remove = round(amount * total)
    if not 0 <= remove <= total - len(scores):
        raise InputError(f"removing {amount:.0%} of the {total} heads would remove {remove}, but each of the "
                         f"{len(scores)} layers keeps at least one head (at most {total - len(scores)} can go); "
                         "lower --amount.")
    order = sorted((float(s[h]), layer, h) for layer, s in enumerate(scores) for h in range(len(s)))
    left = [len(s) for s in scores]
    gone: set[tuple[int, int]] = set()
    for _, layer, h in order:
        if len(gone) == remove:
            break
        if left[layer] > 1:
            gone.add((layer, h))
            left[layer] -= 1
    return [[h for h in range(len(s)) if (layer, h) not in gone] for layer, s in enumerate(scores)]


def neurons_to_keep(scores: Sequence[torch.Tensor], amount: float) -> list[list[int]]:
    """Kept neuron indices per stored layer: the most important ``1 - amount`` of each layer (at least one)."""
    keep = []
    for s in scores:
        n = max(1, len(s) - round(amount * len(s)))
        keep.append(sorted(torch.topk(s, n).indices.tolist()))
    return keep


# --------------------------------------------------------------------------- removal
def pruned_state(state: dict[str, torch.Tensor], config: Any, *, heads: Sequence[Sequence[int]] | None = None,
                 neurons: Sequence[Sequence[int]] | None = None) -> tuple[dict[str, torch.Tensor], Any]:
    """The state dict and config of the model that keeps ``heads[i]`` (head indices) and ``neurons[i]`` (MLP
    neuron indices) of stored layer i; the rows / columns of everything else are dropped."""
    hs = config.head_size
    out = dict(state)
    layer_heads = [config.heads_in_layer(i) for i in range(config.num_stored_layers)]
    layer_ffn = [config.ffn_in_layer(i) for i in range(config.num_stored_layers)]
    for i in range(config.num_stored_layers):
        p = f"body.layers.{i}."
        if heads is not None and len(heads[i]) < layer_heads[i]:
            cols = torch.tensor([h * hs + j for h in heads[i] for j in range(hs)])  # kept columns of one of q / k / v
            inner = layer_heads[i] * hs
            rows = torch.cat([cols, cols + inner, cols + 2 * inner])  # the same heads of q, k and v
            for name in ("weight", "bias"):
                if f"{p}attn.qkv.{name}" in state:  # (qkv_bias=False: GPT-Neo has no q / k / v bias)
                    out[f"{p}attn.qkv.{name}"] = state[f"{p}attn.qkv.{name}"][rows].clone()
            out[f"{p}attn.out.weight"] = state[f"{p}attn.out.weight"][:, cols].clone()
            layer_heads[i] = len(heads[i])
        if neurons is not None and len(neurons[i]) < layer_ffn[i]:
            keep = torch.tensor(list(neurons[i]))
            out[f"{p}mlp.fc1.weight"] = state[f"{p}mlp.fc1.weight"][keep].clone()
            out[f"{p}mlp.fc1.bias"] = state[f"{p}mlp.fc1.bias"][keep].clone()
            out[f"{p}mlp.fc2.weight"] = state[f"{p}mlp.fc2.weight"][:, keep].clone()
            layer_ffn[i] = len(neurons[i])
    changes: dict[str, Any] = {}
    if layer_heads != [config.num_heads] * config.num_stored_layers:
        changes["layer_heads"] = layer_heads
    if layer_ffn != [config.ffn_size] * config.num_stored_layers:
        changes["layer_ffn_sizes"] = layer_ffn
    return out, config.replace(**changes)


def prune(model: nn.Module, *, heads: Sequence[Sequence[int]] | None = None,
          neurons: Sequence[Sequence[int]] | None = None) -> nn.Module:
    """A new model of ``type(model)`` that keeps only ``heads`` / ``neurons`` of each stored layer."""
    if model.config.quantization is not None:
        raise InputError("pruning a quantized model is not supported: prune the float model first, then quantize.")
    state, config = pruned_state(model.state_dict(), model.config, heads=heads, neurons=neurons)
    device = next(model.parameters()).device
    new = type(model)(config)
    new.load_checked(state, where="the pruned model")
    return new.to(device).train(model.training)


def magnitude_prune(model: nn.Module, amount: float) -> dict[str, float]:
    """Zero the ``amount`` smallest |w| of every Linear weight of the body, in place (per tensor, ties by
    order). Returns {module name: fraction of zeros}."""
    sparsity = {}
    with torch.no_grad():
        for name, module in model.body.named_modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                k = round(amount * w.numel())
                if k > 0:
                    index = torch.topk(w.abs().flatten(), k, largest=False).indices
                    w.view(-1)[index] = 0.0
                sparsity[f"body.{name}"] = float((w == 0).float().mean())
    return sparsity


__all__ = ["Gates", "heads_to_keep", "importance", "magnitude_prune", "neurons_to_keep", "normalize_head_scores",
           "prune", "pruned_state"]
