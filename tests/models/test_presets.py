"""Every preset's base-model parameter count: re-derived on the meta device, checked against the recorded
count, against HF transformers' own base model of the same architecture, and against the GPT-3 paper."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lmforge.commands.params import count
from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.presets import PRESETS

SEED_COUNTS = {"bert-base": 109_482_240, "albert-base": 11_683_584, "gpt2": 124_439_808,
               "distilbert": 66_362_880, "electra-small": 13_483_008}
GPT3_PAPER = {"gpt3-small": 125e6, "gpt3-medium": 350e6, "gpt3-large": 760e6, "gpt3-xl": 1.3e9,
              "gpt3-2.7b": 2.7e9, "gpt3-6.7b": 6.7e9, "gpt3-13b": 13e9, "gpt3-175b": 175e9}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_count_matches_record(name):
    assert count(name)["total"] == PRESETS[name].params
    assert PRESETS[name].source


def test_seed_counts():
    for name, n in SEED_COUNTS.items():
        assert PRESETS[name].params == n == count(name)["total"]


@pytest.mark.parametrize("name", list(GPT3_PAPER))
def test_gpt3_matches_paper(name):
    assert abs(PRESETS[name].params / GPT3_PAPER[name] - 1) < 0.03


def _hf_config(name: str):
    transformers = pytest.importorskip("transformers")
    c = ModelConfig.from_preset(name)
    common = dict(vocab_size=c.vocab_size)
    f = c.family
    if f in ("bert", "roberta", "electra", "albert", "bigbird"):
        kw = dict(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                  intermediate_size=c.ffn_size, max_position_embeddings=c.max_positions,
                  type_vocab_size=c.type_vocab_size, **common)
        if f == "albert":
            return transformers.AlbertModel, transformers.AlbertConfig(embedding_size=c.embed_size, **kw)
        if f == "electra":
            return transformers.ElectraModel, transformers.ElectraConfig(embedding_size=c.embed_size, **kw)
        if f == "bigbird":
            return transformers.BigBirdModel, transformers.BigBirdConfig(attention_type="original_full", **kw)
        cls = {"bert": (transformers.BertModel, transformers.BertConfig),
               "roberta": (transformers.RobertaModel, transformers.RobertaConfig)}[f]
        return cls[0], cls[1](**kw)
    if f == "distilbert":
        return transformers.DistilBertModel, transformers.DistilBertConfig(
            dim=c.hidden_size, n_layers=c.num_layers, n_heads=c.num_heads, hidden_dim=c.ffn_size, **common)
    if f in ("gpt2", "gpt3"):
        return transformers.GPT2Model, transformers.GPT2Config(
            n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, n_positions=c.max_positions, **common)
    if f == "openai-gpt":
        return transformers.OpenAIGPTModel, transformers.OpenAIGPTConfig(
            n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, n_positions=c.max_positions, **common)
    raise AssertionError(f)


# the big GPT-3 rows are skipped for HF only to keep the test fast (HF builds eagerly module by module)
HF_NAMES = [n for n in PRESETS if n not in ("gpt3-6.7b", "gpt3-13b", "gpt3-175b")]


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_base_model_count(name):
    cls, config = _hf_config(name)
    with torch.device("meta"):
        hf = cls(config)
    assert sum(p.numel() for p in hf.parameters()) == PRESETS[name].params


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="Did you mean: bert-base"):
        ModelConfig.from_preset("bert-bsae")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=120)


def test_cli_presets_and_params_json():
    out = _cli("presets", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == list(PRESETS)
    bert = next(r for r in rows if r["name"] == "bert-base")
    assert bert == {"name": "bert-base", "family": "bert", "layers": 12, "hidden": 768, "heads": 12,
                    "embedding_size": 768, "params": 109_482_240}
    out = _cli("params", "albert-base", "--json")
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)
    assert p["name"] == "albert-base" and p["total"] == 11_683_584
    assert p["embeddings"] + p["layers"] + p["heads"] == p["total"]
    assert p["unfactorized_embeddings"] > 5 * p["embeddings"]  # ALBERT's lesson
    bad = _cli("params", "bert-bsae")
    assert bad.returncode == 2 and "Did you mean: bert-base" in bad.stderr + bad.stdout
