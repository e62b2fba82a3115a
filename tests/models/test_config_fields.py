"""ModelConfig: a comment on every field, and impossible values / types named by field."""
from __future__ import annotations

import ast
import inspect

import pytest

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError


def test_every_field_has_a_comment():
    source = inspect.getsource(ModelConfig)
    lines = source.splitlines()
    body = ast.parse(source).body[0]
    fields = [node for node in body.body if isinstance(node, ast.AnnAssign)]
    assert {f.target.id for f in fields} == set(ModelConfig.field_names())
    bare = []
    for node in fields:
        line = lines[node.lineno - 1]
        above = lines[node.lineno - 2].strip()
        if "#" not in line and not above.startswith("#"):
            bare.append(node.target.id)
    assert not bare, f"fields without a comment: {bare}"


@pytest.mark.parametrize("fields, match", [
    ({"causal": "false"}, "causal must be true or false"),
    ({"tie_word_embeddings": 1}, "tie_word_embeddings must be true or false"),
    ({"pooler": "yes"}, "pooler must be true, false or null"),
    ({"embedding_norm": 0}, "embedding_norm"),
    ({"family": ""}, "family must be a non-empty string"),
    ({"extra": []}, "extra must be an object"),
    ({"pad_token_id": True}, "pad_token_id"),
    ({"pad_token_id": 30522}, r"pad_token_id=30522 must be a token id in \[0, vocab_size=30522\)"),
    ({"hidden_size": "768"}, "hidden_size must be a positive integer"),
    ({"num_heads": 0}, "num_heads"),
    ({"intermediate_size": 0}, "intermediate_size"),
    ({"embedding_size": -1}, "embedding_size"),
    ({"max_positions": 16, "position_offset": 16}, "position_offset=16 leaves no usable position"),
    ({"type_vocab_size": -1}, "type_vocab_size must be an integer >= 0"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
    ({"initializer_range": float("nan")}, "initializer_range"),
    ({"attention_dropout": -0.1}, "attention_dropout"),
    ({"classifier_token": "middle"}, "classifier_token"),
    ({"extract_combine": "mean"}, "extract_combine"),
    ({"mlm_activation": 3}, "mlm_activation must be a name"),  # unknown names: tests/models/test_model.py
    ({"head": "seq-cls", "family": "distilbert", "pooler": False}, "no pooler"),
    ({"qkv_bias": "no"}, "qkv_bias must be true or false"),
    ({"attention_scale": 0.0}, "attention_scale=0.0 must be a positive number or null"),
    ({"qa_head": "mlp"}, "qa_head='mlp' is not one of: linear, bigbird"),
    ({"sep_token_id": 30522}, "sep_token_id=30522 must be a token id"),
])
def test_impossible_values_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(fields)


def test_every_preset_and_family_default_is_valid_and_typed():
    from lmforge.presets import PRESETS

    for name in PRESETS:  # from_preset validates; the switches come out as real booleans
        config = ModelConfig.from_preset(name)
        assert isinstance(config.causal, bool) and isinstance(config.tie_word_embeddings, bool)
