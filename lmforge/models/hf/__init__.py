"""HF transformers checkpoints in and out, without importing transformers.

``load_hf(dir)`` reads an HF directory (config.json with ``model_type`` + model.safetensors, a sharded
safetensors index, or pytorch_model.bin loaded with ``weights_only=True``), translates the config,
maps the weight names (fusing q, k, v) and returns an lmforge ``Model``. ``export_hf(model, dir)``
writes config.json (with ``model_type`` and ``architectures``) + model.safetensors that
``transformers.AutoModelFor...from_pretrained`` loads.

Each family is one module defining ``FAMILY: HFFamily`` (see ``base.py``); ``FAMILIES`` maps the HF
``model_type`` to that module, imported only when used.
"""
from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmforge.errors import CheckpointError, LmforgeError
from lmforge.models.hf.base import HFFamily, StateDict, hf_to_lmforge, lmforge_to_hf

if TYPE_CHECKING:
    from lmforge.models.model import Model

# HF config.json "model_type" -> module holding its FAMILY (lmforge ModelConfig.family uses the same names)
FAMILIES: dict[str, str] = {
    "bert": "lmforge.models.hf.bert",
    "roberta": "lmforge.models.hf.roberta",
    "albert": "lmforge.models.hf.albert",
    "electra": "lmforge.models.hf.electra",
    "distilbert": "lmforge.models.hf.distilbert",
    "gpt2": "lmforge.models.hf.gpt2",
    "openai-gpt": "lmforge.models.hf.openai_gpt",
}

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def get_family(model_type: str) -> HFFamily:
    """The converter of one HF model_type; LmforgeError listing the supported ones otherwise."""
    if model_type not in FAMILIES:
        raise LmforgeError(f"HF model_type {model_type!r} is not supported; supported model types: "
                           f"{', '.join(FAMILIES)}.")
    try:
        module = importlib.import_module(FAMILIES[model_type])
    except ModuleNotFoundError as err:  # a registered family whose module is not written yet
        raise LmforgeError(f"HF model_type {model_type!r} has no converter in this lmforge build "
                           f"({err}).") from err
    return module.FAMILY


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


def _source_head(family: HFFamily, hf_config: dict[str, Any]) -> tuple[str | None, bool]:
    """The lmforge head of the checkpoint's HF class, and whether that class is one we know."""
    archs = hf_config.get("architectures") or []
    if not archs:
        return None, False
    try:
        return family.head_for_architecture(archs[0]), True
    except KeyError:
        return None, False


def load_hf(path: str | Path, *, head: str | None = None, **overrides: Any) -> Model:
    """Load an HF checkpoint directory as an lmforge Model.

    ``head=None`` keeps the checkpoint's head (from config.json ``architectures``); another head loads
    the body and initialises the new head, dropping the checkpoint's. ``overrides`` are ModelConfig
    fields (``num_labels=3``, dropout rates, ...); unknown names fail in ModelConfig.
    """
    path = Path(path)
    hf_config = read_hf_config(path)
    family = get_family(hf_config["model_type"])
    state = read_hf_weights(path)  # fail on a bad file before building anything
    source_head, known = _source_head(family, hf_config)
    if not known and hf_config.get("architectures") and head is None:
        supported = ", ".join(s.hf_class for s in family.heads.values())
        warnings.warn(f"{path}: HF class {hf_config['architectures'][0]} has no lmforge head "
                      f"(supported: {supported}); loading the base model only.", stacklevel=2)
    target_head = head if head is not None else source_head
    fields = family.config_from_hf(hf_config)
    saved_labels = fields["num_labels"]
    fields["head"] = target_head
    if _named_labels(hf_config):  # keep "positive" / "negative" for the way back to HF
        fields["extra"] = {"id2label": {str(k): v for k, v in hf_config["id2label"].items()}}
    fields.update(family.head_fields(target_head))
    fields.update(overrides)
    config = _make_config(fields)
    from lmforge.models.model import Model
    model = Model(config)
    named = model.state_dict(keep_vars=True)
    expected = {k: v.shape for k, v in named.items()}
    source_spec = family.heads[source_head] if known else None
    head_changed = target_head != source_head or config.num_labels != saved_labels
    converted = hf_to_lmforge(family, state, config, target_head, expected, head_changed=head_changed,
                              source_spec=source_spec, drop_unprefixed=not known, where=str(path))
    _check_covered(model, converted, family, config, target_head)
    model.load_state_dict(converted, strict=False)
    return model


def _named_labels(hf_config: dict[str, Any]) -> bool:
    """True when config.json names its labels (not transformers' default LABEL_0, LABEL_1 ...)."""
    id2label = hf_config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return False
    return any(str(v) != f"LABEL_{k}" for k, v in id2label.items())


def _make_config(fields: dict[str, Any]) -> Any:
    from lmforge.config import ModelConfig
    return ModelConfig.from_dict(fields)


def _check_covered(model: torch.nn.Module, converted: StateDict, family: HFFamily, config: Any,
                   head: str | None) -> None:
    """Every model tensor is either converted, tied to one that is, or allowed to stay initialised."""
    named = model.state_dict(keep_vars=True)
    by_id: dict[int, str] = {}
    for key, tensor in named.items():
        by_id.setdefault(id(tensor), key)
    allowed = {e.lm for e in family.entries(config, head) if e.optional or not e.in_body}
    loaded = {id(named[k]) for k in converted}
    left = [k for k, t in named.items()
            if k not in converted and id(t) not in loaded and k not in allowed and by_id[id(t)] == k
            and not k.endswith(".position_ids")]
    if left:
        raise CheckpointError(f"the HF {family.model_type} map does not fill the lmforge tensors "
                              f"{', '.join(left[:8])}; this config uses a feature HF {family.model_type} "
                              "checkpoints do not have.")


def export_hf(model: Model, path: str | Path) -> Path:
    """Write ``model`` as an HF checkpoint directory: config.json + model.safetensors."""
    from safetensors.torch import save_file

    config = model.config
    family = get_family(config.family)
    spec = family.head_spec(config.head)
    hf_config = family.config_to_hf(config)
    # transformers 5 validates config.json strictly (a null where it wants a float fails): unset values
    # are left out and HF's defaults apply (GPT-2's bos / eos 50256 reads back as None outside the vocabulary)
    hf_config = {k: v for k, v in hf_config.items() if v is not None}
    hf_config.update(model_type=family.model_type, architectures=[spec.hf_class])
    if config.head in ("seq-cls", "token-cls"):
        names = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
        saved = config.extra.get("id2label") if isinstance(config.extra, dict) else None
        if isinstance(saved, dict) and sorted(saved) == sorted(names):
            names = {k: str(v) for k, v in saved.items()}
        hf_config["id2label"] = names
        hf_config["label2id"] = {v: int(k) for k, v in names.items()}
    state = lmforge_to_hf(family, model.state_dict(), config, config.head)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["FAMILIES", "export_hf", "get_family", "is_hf_dir", "load_hf", "read_hf_config", "read_hf_weights"]
