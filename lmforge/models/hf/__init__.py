"""HF transformers checkpoints as state-dict adapters, without importing transformers.

``read_hf_config`` / ``read_hf_weights`` read an HF directory (config.json with ``model_type`` +
model.safetensors, a sharded safetensors index, or pytorch_model.bin loaded with ``weights_only=True``);
``get_adapter(model_type)`` gives the family's ``StateDictAdapter`` (``adapter.py``): config dict <->
ModelConfig, state dict <-> state dict. ``Model.from_pretrained`` / ``Model.export_hf``
(``lmforge/models/model.py``) build the model and write the files; nothing here builds a Model.

Each family is one module defining ``FAMILY: HFFamily`` (see ``base.py``); ``FAMILIES`` maps the HF
``model_type`` to that module, imported only when used.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError, LmforgeError
from lmforge.models.hf.adapter import HFSource, StateDictAdapter
from lmforge.models.hf.base import HFFamily, StateDict
from lmforge.models.hf.pruned import unpruned

# HF config.json "model_type" -> module holding its FAMILY (lmforge ModelConfig.family uses the same names, but
# for FAMILY_MODEL_TYPES)
FAMILIES: dict[str, str] = {
    "bert": "lmforge.models.hf.bert",
    "roberta": "lmforge.models.hf.roberta",
    "albert": "lmforge.models.hf.albert",
    "electra": "lmforge.models.hf.electra",
    "distilbert": "lmforge.models.hf.distilbert",
    "gpt2": "lmforge.models.hf.gpt2",
    "openai-gpt": "lmforge.models.hf.openai_gpt",
    "big_bird": "lmforge.models.hf.big_bird",
    "gpt_neo": "lmforge.models.hf.gpt_neo",
}
# lmforge ModelConfig.family names that HF spells otherwise (export picks the adapter by the family)
FAMILY_MODEL_TYPES: dict[str, str] = {"bigbird": "big_bird", "gpt-neo": "gpt_neo"}

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def get_family(model_type: str) -> HFFamily:
    """The converter of one HF model_type (or lmforge family); LmforgeError listing the supported ones otherwise."""
    model_type = FAMILY_MODEL_TYPES.get(model_type, model_type)
    if model_type not in FAMILIES:
        raise LmforgeError(f"HF model_type {model_type!r} is not supported; supported model types: "
                           f"{', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[model_type]).FAMILY


def get_adapter(model_type: str) -> StateDictAdapter:
    """The state-dict adapter of one HF model_type (an lmforge ``ModelConfig.family`` uses the same names)."""
    return StateDictAdapter(get_family(model_type))


def is_hf_dir(path: str | Path) -> bool:
    """True when ``path/config.json`` is an HF config (it names a ``model_type``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def read_hf_config(path: Path) -> dict[str, Any]:
    """config.json of an HF directory; CheckpointError when it is missing, not JSON or has no model_type."""
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path} has no config.json; an HF checkpoint directory needs config.json "
                              f"and one of {', '.join(WEIGHTS_FILES)}.")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err}); re-download or re-export it.") from err
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{file} has no 'model_type', so it is not an HF config.json.")
    return config


def _read_safetensors(file: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file} is corrupted or truncated ({err}); re-download or re-export the "
                              "checkpoint.") from err


def read_hf_weights(path: Path) -> StateDict:
    """All tensors of an HF checkpoint directory, on CPU. Never unpickles arbitrary objects."""
    single = path / "model.safetensors"
    if single.is_file():
        return _read_safetensors(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index ({err}).") from err
        state: StateDict = {}
        for shard in shards:
            if not (path / shard).is_file():
                raise CheckpointError(f"{index} names the shard {shard}, which is missing from {path}.")
            state.update(_read_safetensors(path / shard))
        return state
    bin_file = path / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError / RuntimeError / EOFError for bad files
            raise CheckpointError(f"{bin_file} cannot be read safely ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); it may be truncated or "
                                  "hold pickled code. Use a model.safetensors file instead.") from err
        if not isinstance(state, dict):
            raise CheckpointError(f"{bin_file} does not hold a state dict.")
        return state
    present = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise CheckpointError(f"{path} has no weights file: expected one of {', '.join(WEIGHTS_FILES)} "
                          f"(found: {present}).")


__all__ = ["FAMILIES", "FAMILY_MODEL_TYPES", "WEIGHTS_FILES", "HFSource", "StateDictAdapter", "get_adapter",
           "get_family", "is_hf_dir", "read_hf_config", "read_hf_weights", "unpruned"]
