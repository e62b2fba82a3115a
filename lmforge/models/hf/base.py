"""The shared machinery of the HF checkpoint converters; every family module builds on it.

A family (``bert.py``, ``albert.py``, ``gpt2.py`` ...) is data, not code paths: an ``HFFamily`` with
- the config translation both ways (HF ``config.json`` dict <-> ModelConfig fields),
- ``body(config)``: the list of ``Entry`` pairs lmforge name <-> HF name for the Transformer body,
- ``heads``: lmforge head name -> ``HeadSpec`` (the HF class, whether it has the pooler, its entries).

One ``Entry`` says how one lmforge tensor is made from one or more HF tensors: renamed, fused by
concatenation along dim 0 (q, k, v -> qkv), transposed (GPT-2's Conv1D keeps weights as (in, out)).
The same list drives both directions, so loading and exporting cannot drift apart.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import CheckpointError, ConfigError

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


# Old (TF-converted / pre-2019) checkpoints name LayerNorm parameters gamma / beta.
_LEGACY = ((re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias"))


def normalize_hf_keys(state: StateDict, prefix: str) -> tuple[StateDict, set[str]]:
    """Strip the base-model prefix ("bert.") and rename legacy gamma/beta.

    Returns the renamed state and the keys that belong to the head: in a head class (some keys carry
    the prefix) those are the keys without it; a bare base-model checkpoint has none.
    """
    out: StateDict = {}
    head_keys: set[str] = set()
    prefixed = any(k.startswith(prefix + ".") for k in state)
    for key, value in state.items():
        for pattern, repl in _LEGACY:
            key = pattern.sub(repl, key)
        if key.startswith(prefix + "."):
            key = key[len(prefix) + 1:]
        elif prefixed:
            head_keys.add(key)
        out[key] = value
    return out, head_keys


def _fmt(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def hf_to_lmforge(family: HFFamily, hf_state: StateDict, config: Any, head: str | None,
                  expected: Mapping[str, torch.Size], *, head_changed: bool,
                  source_spec: HeadSpec | None, drop_unprefixed: bool, where: str) -> StateDict:
    """Translate an HF state dict into lmforge names, checking every tensor.

    ``expected`` maps lmforge keys to the shapes of the model being loaded into. ``head_changed``:
    the caller asked for another head than the checkpoint's (``source_spec``), or another number of
    labels; then the new head's tensors may be missing or differently shaped (they keep their fresh
    init, as HF's ``ignore_mismatched_sizes``) and the checkpoint's own head tensors are dropped. When that
    head is an HF class lmforge does not know (``drop_unprefixed``), every key outside the base-model
    prefix is taken to be its head and dropped.
    Raises CheckpointError naming the missing, unexpected and wrongly shaped tensors.
    """
    state, head_keys = normalize_hf_keys(hf_state, family.prefix)
    for src, dst in family.aliases.items():
        if dst not in state and src in state:
            state[dst] = state.pop(src)
    out: StateDict = {}
    used: set[str] = set()
    missing: list[str] = []
    shapes: list[str] = []
    for e in family.entries(config, head):
        if e.lm not in expected:
            if e.optional:  # the checkpoint has a pooler this lmforge model does not build
                used.update(e.hf)
            continue
        absent = [h for h in e.hf if h not in state]
        if absent:
            if not (e.optional or (head_changed and not e.in_body)):
                missing.extend(absent)
            continue
        parts = [state[h] for h in e.hf]
        used.update(e.hf)
        used.update(c for c in e.copies if c in state)
        if len(parts) > 1:  # fused: each part must be its 1/n share of the lmforge tensor
            want = expected[e.lm]
            part_shape = (want[0] // len(parts), *want[1:])
            bad = [f"{h}: checkpoint {tuple(p.shape)}, model needs {part_shape}"
                   for h, p in zip(e.hf, parts, strict=True) if tuple(p.shape) != part_shape]
            if bad:
                shapes.extend(bad)
                continue
        tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if e.transpose:
            tensor = tensor.t()
        if tensor.shape != expected[e.lm]:
            if head_changed and not e.in_body:
                continue  # e.g. a 3-class classifier under a 5-class one: the new head starts fresh
            shapes.append(f"{'+'.join(e.hf)}: checkpoint {tuple(tensor.shape)}, model needs "
                          f"{tuple(expected[e.lm])}")
            continue
        out[e.lm] = tensor.contiguous()
    ignorable = [re.compile(p) for p in family.ignore]
    spec = family.head_spec(head)
    derived = set(spec.tied) | (set(source_spec.tied) if source_spec else set())
    dropped_head: set[str] = set()
    if head_changed and source_spec is not None:
        dropped_head = {h for e in source_spec.entries(config) for h in e.hf}
    if drop_unprefixed:
        dropped_head |= head_keys
    # Tensors of another head of this family (bert-base-uncased says BertForMaskedLM yet stores the
    # NSP classifier too): unused, as in HF, with a warning; anything else left over is an error.
    other_heads = {h for name, other in family.heads.items() if name != head
                   for e in other.entries(config) for h in (*e.hf, *e.copies)} | {
                   h for other in family.heads.values() for h in other.tied}
    leftover = [k for k in state if k not in used and k not in derived and k not in dropped_head
                and not any(p.search(k) for p in ignorable)]
    unused = sorted(k for k in leftover if k in other_heads)
    if unused:
        warnings.warn(f"{where}: tensors of another head not used by the {head or 'base'} model: "
                      f"{_fmt(unused)}.", stacklevel=3)
    unexpected = sorted(k for k in leftover if k not in other_heads)
    problems = []
    if missing:
        problems.append(f"missing tensors: {_fmt(sorted(set(missing)))}")
    if unexpected:
        problems.append(f"unexpected tensors: {_fmt(unexpected)}")
    if shapes:
        problems.append(f"wrongly shaped tensors: {_fmt(shapes)}")
    if problems:
        raise CheckpointError(
            f"The HF {family.model_type} checkpoint in {where} does not fit the model its config.json "
            f"describes ({'; '.join(problems)}). Check that config.json and the weights file belong "
            "together (same layers / sizes / vocabulary) and were not edited.")
    return out


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """An owned, contiguous CPU copy (safetensors refuses shared or GPU memory); meta stays meta."""
    if tensor.is_meta:
        return tensor.detach().clone()
    return tensor.detach().to("cpu", copy=True).contiguous()


def lmforge_to_hf(family: HFFamily, state: StateDict, config: Any, head: str | None) -> StateDict:
    """The reverse: lmforge state dict -> HF names (with the base-model prefix inside head classes)."""
    spec = family.head_spec(head)
    prefix = f"{family.prefix}." if head is not None else ""
    out: StateDict = {}
    for e in family.entries(config, head):
        if e.optional and not spec.pooler:
            continue  # this HF class is built without the pooler
        if e.lm not in state:
            raise CheckpointError(f"cannot export: the model has no tensor {e.lm} that HF "
                                  f"{spec.hf_class} needs (is the config a {family.model_type} one?)")
        tensor = state[e.lm]
        if e.transpose:
            tensor = tensor.t()
        parts = tensor.chunk(len(e.hf), dim=0) if len(e.hf) > 1 else (tensor,)
        for name, part in zip(e.hf, parts, strict=True):
            out[(prefix + name) if e.in_body else name] = _cpu_copy(part)
        for name in e.copies:
            out[(prefix + name) if e.in_body else name] = _cpu_copy(tensor)
    return out
