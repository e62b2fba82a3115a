"""``StateDictAdapter``: one HF family's config dict <-> ModelConfig and state dict <-> state dict.

The shape of torchtitan's ``protocols/state_dict_adapter.py``: ``to_hf`` / ``from_hf`` rename, fuse and
transpose tensors by the family's ``Entry`` list (``base.py``), ``config_to_hf`` / ``config_from_hf``
translate the configs. Nothing here builds a ``Model``: ``lmforge.models.model`` builds it from the
ModelConfig and loads what ``from_hf`` returns (or exports what ``to_hf`` returns).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import CheckpointError
from lmforge.models.hf.base import Entry, HeadSpec, HFFamily, StateDict

# Old (TF-converted / pre-2019) checkpoints name LayerNorm parameters gamma / beta.
_LEGACY = ((re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias"))


@dataclass(frozen=True)
class HFSource:
    """What a checkpoint's config.json says about the head its weights were saved with."""

    head: str | None  # lmforge head of the saved HF class (None: the bare model or a class lmforge lacks)
    known: bool  # the saved HF class is one of the family's heads (else its head keys are dropped)
    num_labels: int


@dataclass
class _Converted:
    """The entry-by-entry pass of ``from_hf``: converted tensors and what did not fit."""

    out: StateDict
    used: set[str]
    missing: list[str]
    shapes: list[str]


class StateDictAdapter:
    """Maps one HF ``model_type`` (its ``HFFamily``) to lmforge and back."""

    def __init__(self, family: HFFamily) -> None:
        self.family = family

    # ------------------------------------------------------------------ config.json <-> ModelConfig
    def source(self, hf_config: dict[str, Any]) -> HFSource:
        """The head of the checkpoint's HF class (config.json ``architectures``), if lmforge has it."""
        fields = self.family.config_from_hf(hf_config)
        archs = hf_config.get("architectures") or []
        head, known = None, False
        if archs:
            try:
                head, known = self.family.head_for_architecture(archs[0]), True
            except KeyError:
                pass
        return HFSource(head=head, known=known, num_labels=fields["num_labels"])

    def config_from_hf(self, hf_config: dict[str, Any], *, head: str | None = None, where: str = "",
                       **overrides: Any) -> ModelConfig:
        """The ModelConfig of an HF config.json dict. ``head=None`` keeps the checkpoint's head; another
        head keeps the body. ``overrides`` are ModelConfig fields (unknown names fail in ModelConfig)."""
        source = self.source(hf_config)
        if not source.known and hf_config.get("architectures") and head is None:
            supported = ", ".join(s.hf_class for s in self.family.heads.values())
            warnings.warn(f"{where or 'config.json'}: HF class {hf_config['architectures'][0]} has no lmforge "
                          f"head (supported: {supported}); loading the base model only.", stacklevel=3)
        target = head if head is not None else source.head
        fields = self.family.config_from_hf(hf_config)
        fields["head"] = target
        if _named_labels(hf_config):  # keep "positive" / "negative" for the way back to HF
            fields["extra"] = {"id2label": {str(k): v for k, v in hf_config["id2label"].items()}}
        fields.update(self.family.head_fields(target))
        fields.update(overrides)
        return ModelConfig.from_dict(fields)

    def config_to_hf(self, config: ModelConfig) -> dict[str, Any]:
        """The config.json of ``config`` as transformers reads it (model_type, architectures, labels)."""
        spec = self.family.head_spec(config.head)
        hf_config = self.family.config_to_hf(config)
        # transformers 5 validates config.json strictly (a null where it wants a float fails): unset values
        # are left out and HF's defaults apply (GPT-2's bos / eos 50256 reads back as None outside the vocabulary)
        hf_config = {k: v for k, v in hf_config.items() if v is not None}
        hf_config.update(model_type=self.family.model_type, architectures=[spec.hf_class])
        if config.head in ("seq-cls", "token-cls"):
            names = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
            saved = config.extra.get("id2label") if isinstance(config.extra, dict) else None
            if isinstance(saved, dict) and sorted(saved) == sorted(names):
                names = {k: str(v) for k, v in saved.items()}
            hf_config["id2label"] = names
            hf_config["label2id"] = {v: int(k) for k, v in names.items()}
        return hf_config

    # ------------------------------------------------------------------ state dicts
    def to_hf(self, state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> StateDict:
        """lmforge state dict -> HF names (with the base-model prefix inside head classes), CPU copies."""
        family, head = self.family, config.head
        spec = family.head_spec(head)
        prefix = f"{family.prefix}." if head is not None else ""
        out: StateDict = {}
        for e in family.entries(config, head):
            if e.optional and not spec.pooler:
                continue  # this HF class is built without the pooler
            if e.lm not in state_dict:
                raise CheckpointError(f"cannot export: the model has no tensor {e.lm} that HF "
                                      f"{spec.hf_class} needs (is the config a {family.model_type} one?)")
            tensor = state_dict[e.lm]
            if e.transpose:
                tensor = tensor.t()
            parts = tensor.chunk(len(e.hf), dim=0) if len(e.hf) > 1 else (tensor,)
            for name, part in zip(e.hf, parts, strict=True):
                out[(prefix + name) if e.in_body else name] = _cpu_copy(part)
            for name in e.copies:
                out[(prefix + name) if e.in_body else name] = _cpu_copy(tensor)
        return out

    def from_hf(self, hf_state_dict: StateDict, config: ModelConfig, model_state: Mapping[str, torch.Tensor], *,
                source: HFSource, where: str) -> StateDict:
        """HF state dict -> lmforge names, every tensor checked against ``model_state`` (the state dict,
        ``keep_vars=True``, of the Model built from ``config``).

        When ``config`` has another head or label count than the checkpoint (``source``), the new head's
        tensors may be missing or differently shaped (they keep their fresh init, as HF's
        ``ignore_mismatched_sizes``) and the checkpoint's own head is dropped; a head lmforge does not know
        (``source.known`` False) is every key outside the base-model prefix. Raises CheckpointError naming
        the missing, unexpected and wrongly shaped tensors, or the model tensors nothing fills.
        """
        head = config.head
        head_changed = head != source.head or config.num_labels != source.num_labels
        expected = {k: v.shape for k, v in model_state.items()}
        state, head_keys = self._normalized(hf_state_dict)
        converted = self._convert(state, config, expected, head_changed=head_changed)
        source_spec = self.family.heads[source.head] if source.known else None
        unused, unexpected = self._leftovers(state, converted.used, config, head_changed=head_changed,
                                             source_spec=source_spec,
                                             dropped=head_keys if not source.known else set())
        if unused:  # bert-base-uncased says BertForMaskedLM yet stores the NSP classifier too: unused, as in HF
            warnings.warn(f"{where}: tensors of another head not used by the {head or 'base'} model: "
                          f"{_fmt(unused)}.", stacklevel=3)
        self._raise_problems(where, converted, unexpected)
        self._check_covered(model_state, converted.out, config)
        return converted.out

    # ---- the parts of from_hf
    def _normalized(self, hf_state: StateDict) -> tuple[StateDict, set[str]]:
        """Strip the base-model prefix ("bert."), rename legacy gamma / beta, resolve aliases.

        Also returns the keys of the head: in a head class (some keys carry the prefix) those are the
        keys without it; a bare base-model checkpoint has none.
        """
        prefix = self.family.prefix
        state: StateDict = {}
        head_keys: set[str] = set()
        prefixed = any(k.startswith(prefix + ".") for k in hf_state)
        for key, value in hf_state.items():
            for pattern, repl in _LEGACY:
                key = pattern.sub(repl, key)
            if key.startswith(prefix + "."):
                key = key[len(prefix) + 1:]
            elif prefixed:
                head_keys.add(key)
            state[key] = value
        for src, dst in self.family.aliases.items():
            if dst not in state and src in state:
                state[dst] = state.pop(src)
        return state, head_keys

    def _convert(self, state: StateDict, config: ModelConfig, expected: Mapping[str, torch.Size], *,
                 head_changed: bool) -> _Converted:
        """Each Entry of (config, head): fuse, transpose and shape-check its HF tensors."""
        result = _Converted(out={}, used=set(), missing=[], shapes=[])
        for e in self.family.entries(config, config.head):
            if e.lm not in expected:
                if e.optional:  # the checkpoint has a pooler this lmforge model does not build
                    result.used.update(e.hf)
                continue
            absent = [h for h in e.hf if h not in state]
            if absent:
                if not (e.optional or (head_changed and not e.in_body)):
                    result.missing.extend(absent)
                continue
            result.used.update(e.hf)
            result.used.update(c for c in e.copies if c in state)
            tensor = _joined(e, [state[h] for h in e.hf], expected[e.lm], result.shapes)
            if tensor is None:
                continue
            if tensor.shape != expected[e.lm]:
                if head_changed and not e.in_body:
                    continue  # e.g. a 3-class classifier under a 5-class one: the new head starts fresh
                result.shapes.append(f"{'+'.join(e.hf)}: checkpoint {tuple(tensor.shape)}, model needs "
                                     f"{tuple(expected[e.lm])}")
                continue
            result.out[e.lm] = tensor.contiguous()
        return result

    def _leftovers(self, state: StateDict, used: set[str], config: ModelConfig, *, head_changed: bool,
                   source_spec: HeadSpec | None, dropped: set[str]) -> tuple[list[str], list[str]]:
        """Keys no entry read: (tensors of another head of the family, truly unexpected tensors)."""
        family, head = self.family, config.head
        ignorable = [re.compile(p) for p in family.ignore]
        derived = set(family.head_spec(head).tied) | (set(source_spec.tied) if source_spec else set())
        dropped = set(dropped)
        if head_changed and source_spec is not None:
            dropped |= {h for e in source_spec.entries(config) for h in e.hf}
        other_heads = {h for name, other in family.heads.items() if name != head
                       for e in other.entries(config) for h in (*e.hf, *e.copies)} | {
                       h for other in family.heads.values() for h in other.tied}
        leftover = [k for k in state if k not in used and k not in derived and k not in dropped
                    and not any(p.search(k) for p in ignorable)]
        return sorted(k for k in leftover if k in other_heads), sorted(k for k in leftover if k not in other_heads)

    def _raise_problems(self, where: str, converted: _Converted, unexpected: list[str]) -> None:
        problems = []
        if converted.missing:
            problems.append(f"missing tensors: {_fmt(sorted(set(converted.missing)))}")
        if unexpected:
            problems.append(f"unexpected tensors: {_fmt(unexpected)}")
        if converted.shapes:
            problems.append(f"wrongly shaped tensors: {_fmt(converted.shapes)}")
        if problems:
            raise CheckpointError(
                f"The HF {self.family.model_type} checkpoint in {where} does not fit the model its config.json "
                f"describes ({'; '.join(problems)}). Check that config.json and the weights file belong "
                "together (same layers / sizes / vocabulary) and were not edited.")

    def _check_covered(self, model_state: Mapping[str, torch.Tensor], converted: StateDict,
                       config: ModelConfig) -> None:
        """Every model tensor is converted, tied to one that is, or allowed to keep its init."""
        first_name: dict[int, str] = {}
        for key, tensor in model_state.items():
            first_name.setdefault(id(tensor), key)
        allowed = {e.lm for e in self.family.entries(config, config.head) if e.optional or not e.in_body}
        loaded = {id(model_state[k]) for k in converted}
        left = [k for k, t in model_state.items()
                if k not in converted and id(t) not in loaded and k not in allowed and first_name[id(t)] == k
                and not k.endswith(".position_ids")]
        if left:
            model_type = self.family.model_type
            raise CheckpointError(f"the HF {model_type} map does not fill the lmforge tensors "
                                  f"{', '.join(left[:8])}; this config uses a feature HF {model_type} "
                                  "checkpoints do not have.")


def _joined(entry: Entry, parts: list[torch.Tensor], want: torch.Size, shapes: list[str]) -> torch.Tensor | None:
    """One lmforge tensor from its HF parts (concatenated, then transposed); None (and a note in
    ``shapes``) when a fused part is not its 1/n share of the lmforge tensor."""
    if len(parts) > 1:
        part_shape = (want[0] // len(parts), *want[1:])
        bad = [f"{h}: checkpoint {tuple(p.shape)}, model needs {part_shape}"
               for h, p in zip(entry.hf, parts, strict=True) if tuple(p.shape) != part_shape]
        if bad:
            shapes.extend(bad)
            return None
    tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    return tensor.t() if entry.transpose else tensor


def _named_labels(hf_config: dict[str, Any]) -> bool:
    """True when config.json names its labels (not transformers' default LABEL_0, LABEL_1 ...)."""
    id2label = hf_config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return False
    return any(str(v) != f"LABEL_{k}" for k, v in id2label.items())


def _fmt(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """An owned, contiguous CPU copy (safetensors refuses shared or GPU memory); meta stays meta."""
    if tensor.is_meta:
        return tensor.detach().clone()
    return tensor.detach().to("cpu", copy=True).contiguous()
