"""GPT-Neo <-> HF ``gpt_neo``: the GPT-2 body with global / local layers (the parity reference of the
``banded`` attention kind).

HF ``models/gpt_neo``: ``attention_types`` [[["global", "local"], 12]] expands to one kind per layer ("global"
= dense causal, "local" = a causal window of ``window_size`` keys) -> lmforge ``attention_pattern`` ["dense",
"banded", ...] and ``attention_window``. Its q / k / v projections have no bias (``qkv_bias=False``) and the
scores are not divided by sqrt(head size) (``attention_scale=1.0``); the MLP and the projections are
``nn.Linear`` (no Conv1D transpose), pre-LN with ``ln_f``, no embedding LayerNorm.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import (Entry, HeadSpec, HFFamily, activation_from_hf, activation_to_hf, linear,
                                    no_entries)
from lmforge.models.hf.gpt2 import (LM_TIED, gpt_common_from_hf, lm_entries, qa_entries, seq_cls_entries,
                                    token_cls_entries)

KINDS = {"global": "dense", "local": "banded"}
HF_KINDS = {v: k for k, v in KINDS.items()}


def neo_layer(i: int) -> list[Entry]:
    lm, hf = f"body.layers.{i}", f"h.{i}"
    attn = f"{hf}.attn.attention"
    return [Entry(f"{lm}.attn.qkv.weight", (f"{attn}.q_proj.weight", f"{attn}.k_proj.weight", f"{attn}.v_proj.weight")),
            *linear(f"{lm}.attn.out", f"{attn}.out_proj"),
            *linear(f"{lm}.attn_norm", f"{hf}.ln_1"),
            *linear(f"{lm}.mlp.fc1", f"{hf}.mlp.c_fc"),
            *linear(f"{lm}.mlp.fc2", f"{hf}.mlp.c_proj"),
            *linear(f"{lm}.mlp_norm", f"{hf}.ln_2")]


def neo_body(config: Any) -> list[Entry]:
    entries = [*linear("body.embeddings.word", "wte", bias=False),
               *linear("body.embeddings.position", "wpe", bias=False)]
    for i in range(config.num_layers):
        entries += neo_layer(i)
    return entries + linear("body.final_norm", "ln_f")


def expand_attention_types(types: Any) -> list[str]:
    """HF GPTNeoConfig.expand_attention_types_params: [[["global", "local"], 12]] -> 24 names."""
    try:
        return [name for kinds, repeat in types for _ in range(repeat) for name in kinds]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"HF gpt_neo config attention_types={types!r} is not a list of [[kinds], repeat].") from err


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    layers = expand_attention_types(hf.get("attention_types") or [[["global", "local"], hf["num_layers"] // 2]])
    unknown = sorted(set(layers) - set(KINDS))
    if unknown or len(layers) != hf["num_layers"]:
        raise ConfigError(f"HF gpt_neo config attention_types gives {len(layers)} layers of kinds "
                          f"{sorted(set(layers))} for num_layers={hf['num_layers']}; lmforge reads 'global' and "
                          "'local', one per layer.")
    kinds = [KINDS[k] for k in layers]
    hidden = hf["hidden_size"]
    common = gpt_common_from_hf(hf)
    common.update(hidden_dropout=hf.get("resid_dropout", 0.0), embedding_dropout=hf.get("embed_dropout", 0.0),
                  attention_dropout=hf.get("attention_dropout", 0.0),
                  classifier_dropout=hf.get("classifier_dropout", 0.1))
    fields = {
        "family": "gpt-neo",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding_size": hidden,
        "num_layers": hf["num_layers"],
        "num_heads": hf["num_heads"],
        "intermediate_size": hf.get("intermediate_size") or 4 * hidden,
        "activation": activation_from_hf(hf.get("activation_function", "gelu_new"), field="activation_function"),
        "max_positions": hf["max_position_embeddings"],
        "position_kind": "learned",
        "type_vocab_size": 0,
        "embedding_norm": False,
        "pooler": False,
        "norm_placement": "pre",
        "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "qkv_bias": False,
        "attention_scale": 1.0,
        "attention_window": hf.get("window_size", 256),
        **common,
    }
    if len(set(kinds)) == 1:
        fields["attention_kind"] = kinds[0]
    else:
        fields["attention_pattern"] = kinds
    return fields


def attention_types(config: Any) -> list[Any]:
    """lmforge's per-layer kinds as HF attention_types: [[cycle, repeats]]."""
    cycle = config.attention_pattern or [config.attention_kind]
    bad = sorted(set(cycle) - set(HF_KINDS))
    if bad:
        raise ConfigError(f"cannot export attention kinds {bad} to HF gpt_neo: it has 'global' (dense) and 'local' "
                          "(banded) layers only.")
    return [[[HF_KINDS[k] for k in cycle], config.num_layers // len(cycle)]]


def config_to_hf(config: Any) -> dict[str, Any]:
    problems = []
    if config.norm_placement != "pre" or not config.causal or config.position_kind != "learned":
        problems.append("a pre-LN causal decoder with learned positions")
    if config.qkv_bias or config.attention_scale != 1.0:
        problems.append("qkv_bias=False and attention_scale=1.0")
    if config.has_embedding_norm or config.type_vocab_size or config.num_stored_layers != config.num_layers:
        problems.append("no embedding LayerNorm, no segments, every layer stored")
    if problems:
        raise ConfigError(f"cannot export this model to HF gpt_neo: it needs {'; '.join(problems)}.")
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "activation_function": activation_to_hf(config.activation),
        "max_position_embeddings": config.max_positions,
        "attention_types": attention_types(config),
        "window_size": config.attention_window,
        "layer_norm_epsilon": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "resid_dropout": config.hidden_dropout,
        "embed_dropout": config.embedding_dropout if config.embedding_dropout is not None else config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "classifier_dropout": config.classifier_dropout if config.classifier_dropout is not None else 0.1,
        "initializer_range": 0.02,
    }


FAMILY = HFFamily(
    model_type="gpt_neo",
    prefix="transformer",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=neo_body,
    heads={
        None: HeadSpec("GPTNeoModel", no_entries),
        "clm": HeadSpec("GPTNeoForCausalLM", lm_entries, tied=LM_TIED),
        "seq-cls": HeadSpec("GPTNeoForSequenceClassification", seq_cls_entries),
        "token-cls": HeadSpec("GPTNeoForTokenClassification", token_cls_entries),
        "qa": HeadSpec("GPTNeoForQuestionAnswering", qa_entries),
    },
    # attn.attention.bias / masked_bias: the causal / local mask buffers old checkpoints saved
    ignore=(r"(^|\.)position_ids$", r"^h\.\d+\.attn\.attention\.(bias|masked_bias)$"),
    aliases={"lm_head.weight": "wte.weight"},
)
