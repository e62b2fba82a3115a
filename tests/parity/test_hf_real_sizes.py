"""Real-size presets against the HF architecture of the same config, on the meta device (no memory):
the exported names and shapes are exactly those of the HF base model, the HF parameter count is the
preset's, and translating the exported config back gives the preset's config."""
from __future__ import annotations

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models.hf import get_adapter
from lmforge.presets import get_preset

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

PRESETS = ["bert-base", "bert-large", "roberta-base", "albert-base", "albert-xxlarge", "electra-small", "electra-large",
           "distilbert"]
# fields that do not shape the network or that HF does not carry (lmforge bookkeeping)
NOT_CARRIED = {"extra", "initializer_range", "embedding_dropout", "scaled_residual_init", "extract_combine"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_exports_to_the_hf_architecture(preset: str) -> None:
    config = ModelConfig.from_preset(preset)
    adapter = get_adapter(config.family)
    hf_dict = adapter.config_to_hf(config)
    hf_config = transformers.AutoConfig.for_model(**hf_dict)
    with torch.device("meta"):
        hf = transformers.AutoModel.from_config(hf_config)
        ours = Model(config)
    exported = adapter.to_hf(ours.state_dict(), config)
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert sum(p.numel() for p in hf.parameters()) == get_preset(preset).params
    back = adapter.config_from_hf(hf_config.to_dict())
    mine, theirs = config.to_dict(), back.to_dict()
    differing = {k for k in mine if mine[k] != theirs[k] and k not in NOT_CARRIED}
    assert not differing, {k: (mine[k], theirs[k]) for k in differing}
