"""The vocabulary of the HF family maps: every family module (``bert.py`` ...) is built from these.

A family (``bert.py``, ``albert.py``, ``gpt2.py`` ...) is data, not code paths: an ``HFFamily`` with
- the config translation both ways (HF ``config.json`` dict <-> ModelConfig fields),
- ``body(config)``: the list of ``Entry`` pairs lmforge name <-> HF name for the Transformer body,
- ``heads``: lmforge head name -> ``HeadSpec`` (the HF class, whether it has the pooler, its entries).

One ``Entry`` says how one lmforge tensor is made from one or more HF tensors: renamed, fused by
concatenation along dim 0 (q, k, v -> qkv), transposed (GPT-2's Conv1D keeps weights as (in, out)).
The same list drives both directions (``adapter.StateDictAdapter``), so loading and exporting cannot
drift apart.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import ConfigError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Entry:
    """One lmforge tensor and the HF tensor(s) it corresponds to."""

    lm: str  # lmforge state-dict key, e.g. "body.layers.0.attn.qkv.weight"
    hf: tuple[str, ...]  # HF key(s) without the base-model prefix; several = concatenated along dim 0
    transpose: bool = False  # HF stores the matrix as (in, out) (GPT-2 Conv1D): transpose after fusing
    # Built only by the HF classes that have the pooler (BertForMaskedLM has none): when missing on
    # load, lmforge keeps its own initialisation, as HF does ("newly initialized"); on export it is
    # written only for HF classes with ``HeadSpec.pooler``.
    optional: bool = False
    # Key in the HF base model (with prefix) rather than in the head: set False for head tensors.
    in_body: bool = True
    # More HF names holding the same tensor (an untied BERT MLM head keeps ``cls.predictions.bias``
    # beside the ``decoder.bias`` it uses): written on export, accepted and not read on load.
    copies: tuple[str, ...] = ()


def linear(lm: str, hf: str, *, bias: bool = True, optional: bool = False, in_body: bool = True) -> list[Entry]:
    """``weight`` (+ ``bias``) of one Linear / LayerNorm module."""
    names = ("weight", "bias") if bias else ("weight",)
    return [Entry(f"{lm}.{n}", (f"{hf}.{n}",), optional=optional, in_body=in_body) for n in names]


def head_linear(lm: str, hf: str, *, bias: bool = True) -> list[Entry]:
    """``weight`` (+ ``bias``) of a head module: HF keeps heads outside the base-model prefix."""
    return linear(lm, hf, bias=bias, in_body=False)


def fused_linear(lm: str, *hf: str) -> list[Entry]:
    """Fused weight and bias of q, k, v projections (each (H, H) in HF) -> lmforge qkv (3H, H)."""
    return [Entry(f"{lm}.{n}", tuple(f"{h}.{n}" for h in hf)) for n in ("weight", "bias")]


@dataclass(frozen=True)
class HeadSpec:
    """How one lmforge head appears in HF."""

    hf_class: str  # e.g. "BertForMaskedLM": written to config.json "architectures"
    entries: Callable[[Any], list[Entry]]  # (ModelConfig) -> the head's tensors (in_body=False)
    pooler: bool = False  # whether this HF class builds the base model's pooler
    # HF tensors this class stores that lmforge derives (tied decoder weights): ignored on load.
    tied: tuple[str, ...] = ()


def no_entries(config: Any) -> list[Entry]:
    """Head with no tensors of its own (the bare base model)."""
    return []


@dataclass(frozen=True)
class HFFamily:
    """Everything the loader / exporter needs to know about one HF ``model_type``."""

    model_type: str  # HF config.json "model_type"
    prefix: str  # HF base_model_prefix: body keys are "<prefix>.<name>" inside head classes
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]]  # HF config dict -> ModelConfig fields
    config_to_hf: Callable[[Any], dict[str, Any]]  # ModelConfig -> HF config dict (no architectures)
    body: Callable[[Any], list[Entry]]  # (ModelConfig) -> body tensors
    heads: Mapping[str | None, HeadSpec]  # lmforge head (None = bare model) -> HF class
    # Regexes of HF keys that hold nothing lmforge needs (buffers saved by old versions, ...).
    ignore: tuple[str, ...] = field(default=(r"(^|\.)position_ids$", r"(^|\.)token_type_ids$"))
    # HF key -> the (prefix-stripped) key it stands for when that one is missing: transformers saves one
    # tensor of a tied pair and may keep either name (OpenAIGPTDoubleHeadsModel keeps lm_head.weight).
    aliases: Mapping[str, str] = field(default_factory=dict)
    # Extra ModelConfig fields one head needs in this family (RoBERTa's choice head reads the pooler
    # while its seq-cls head has its own dense + tanh): (head) -> fields.
    head_fields: Callable[[str | None], dict[str, Any]] = field(default=lambda head: {})

    def head_for_architecture(self, arch: str) -> str | None:
        """The lmforge head of an HF class name; raises KeyError when the family has no such head."""
        for head, spec in self.heads.items():
            if spec.hf_class == arch:
                return head
        raise KeyError(arch)

    def entries(self, config: Any, head: str | None) -> list[Entry]:
        """Body and head tensors of one (config, head), in the order HF lists them."""
        spec = self.head_spec(head)
        return [*self.body(config), *spec.entries(config)]

    def head_spec(self, head: str | None) -> HeadSpec:
        if head not in self.heads:
            supported = ", ".join("None (base model)" if h is None else h for h in self.heads)
            raise ConfigError(f"HF {self.model_type} has no counterpart of the lmforge head {head!r}; "
                              f"supported heads for {self.model_type}: {supported}.")
        return self.heads[head]


# HF activation names -> lmforge ``ModelConfig.activation``. "gelu_pytorch_tanh" and "gelu_new" are
# the same tanh approximation written two ways.
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}


def activation_from_hf(name: str, *, field: str) -> str:
    if name not in ACTIVATIONS_FROM_HF:
        raise ConfigError(f"HF config {field}={name!r} has no lmforge activation; supported: "
                          f"{', '.join(ACTIVATIONS_FROM_HF)}.")
    return ACTIVATIONS_FROM_HF[name]


def activation_to_hf(name: str) -> str:
    if name not in ACTIVATIONS_TO_HF:
        raise ConfigError(f"activation {name!r} cannot be exported to HF; exportable: "
                          f"{', '.join(ACTIVATIONS_TO_HF)}.")
    return ACTIVATIONS_TO_HF[name]


def token_id(value: Any) -> int | None:
    """An HF special-token id as lmforge keeps it: HF allows a list (several EOS ids); take the first."""
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def num_labels_from_hf(hf: dict[str, Any]) -> int:
    """HF writes id2label (its length is the label count) and sometimes num_labels."""
    return len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))
