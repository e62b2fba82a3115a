"""BERT <-> HF ``bert``: config translation, body and head weight maps.

RoBERTa and ELECTRA reuse the body map and the config translation from here (their HF modules are
copies of BERT's under other names); ALBERT and DistilBERT share the head maps.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import (Entry, HeadSpec, HFFamily, activation_from_hf, activation_to_hf,
                                    fused_linear, head_linear, linear, no_entries, num_labels_from_hf, token_id)

# HF BertLayer module names -> the lmforge layer they fill
BERT_LAYER = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "mlp_norm": "output.LayerNorm",
}


def layer_entries(i: int, hf_layer: str, names: dict[str, Any]) -> list[Entry]:
    """One post-LN encoder layer: q, k, v fused; attention output; LN; MLP; LN."""
    lm = f"body.layers.{i}"
    return [
        *fused_linear(f"{lm}.attn.qkv", *(f"{hf_layer}.{n}" for n in names["qkv"])),
        *linear(f"{lm}.attn.out", f"{hf_layer}.{names['out']}"),
        *linear(f"{lm}.attn_norm", f"{hf_layer}.{names['attn_norm']}"),
        *linear(f"{lm}.mlp.fc1", f"{hf_layer}.{names['fc1']}"),
        *linear(f"{lm}.mlp.fc2", f"{hf_layer}.{names['fc2']}"),
        *linear(f"{lm}.mlp_norm", f"{hf_layer}.{names['mlp_norm']}"),
    ]


def embedding_entries(config: Any, *, segments: bool = True) -> list[Entry]:
    """word / position / (segment) embeddings and their LayerNorm, HF ``embeddings.*`` names."""
    entries = [*linear("body.embeddings.word", "embeddings.word_embeddings", bias=False),
               *linear("body.embeddings.position", "embeddings.position_embeddings", bias=False),
               *linear("body.embeddings.norm", "embeddings.LayerNorm")]
    if segments and config.type_vocab_size > 0:
        entries += linear("body.embeddings.segment", "embeddings.token_type_embeddings", bias=False)
    return entries


def bert_body(config: Any, *, pooler: bool = True) -> list[Entry]:
    entries = embedding_entries(config)
    for i in range(config.num_layers):
        entries += layer_entries(i, f"encoder.layer.{i}", BERT_LAYER)
    if pooler:
        entries += linear("body.pooler.dense", "pooler.dense", optional=True)
    return entries


# ---- config translation -------------------------------------------------------------------------

def check_importable(hf: dict[str, Any], *, family: str) -> None:
    """Refuse HF switches that change the network in ways lmforge does not build, naming the key."""
    problems = []
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        problems.append("is_decoder / add_cross_attention (only the bidirectional encoder)")
    if problems:
        raise ConfigError(f"HF {family} config with {'; '.join(problems)} is not supported.")


def bert_config_from_hf(hf: dict[str, Any], *, family: str) -> dict[str, Any]:
    """ModelConfig fields of an HF BERT-style config (bert, roberta, electra, albert share the keys)."""
    check_importable(hf, family=family)
    hidden = hf["hidden_size"]
    return {
        "family": family,
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding_size": None if hf.get("embedding_size", hidden) == hidden else hf["embedding_size"],  # None = H
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "intermediate_size": hf["intermediate_size"],
        "activation": activation_from_hf(hf.get("hidden_act", "gelu"), field="hidden_act"),
        "max_positions": hf["max_position_embeddings"],
        "position_kind": "learned",
        "type_vocab_size": hf.get("type_vocab_size", 2),
        "norm_placement": "post",
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "causal": False,
        "pad_token_id": token_id(hf.get("pad_token_id", 0)),
        "bos_token_id": token_id(hf.get("bos_token_id")),
        "eos_token_id": token_id(hf.get("eos_token_id")),
        "num_labels": num_labels_from_hf(hf),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True),
        "hidden_dropout": hf.get("hidden_dropout_prob", 0.1),
        "attention_dropout": hf.get("attention_probs_dropout_prob", 0.1),
        "classifier_dropout": hf.get("classifier_dropout"),
    }


def check_exportable(config: Any, *, shared_layers: bool = False, position_offset: int = 0) -> None:
    """Refuse what an HF encoder of this family cannot express, naming the field."""
    problems = []
    if config.norm_placement != "post":
        problems.append(f"norm_placement={config.norm_placement!r} (HF encoders are post-LN)")
    if config.causal:
        problems.append("causal=True (HF encoders here are bidirectional)")
    if config.position_kind != "learned":
        problems.append(f"position_kind={config.position_kind!r} (HF {config.family} has a learned table)")
    if config.attention_kind != "dense":
        problems.append(f"attention_kind={config.attention_kind!r}")
    if not config.has_embedding_norm:
        problems.append("embedding_norm=False")
    if config.num_stored_layers != config.num_layers and not shared_layers:
        problems.append(f"num_layer_groups={config.num_layer_groups} (HF {config.family} stores every layer)")
    if config.position_offset != position_offset:
        problems.append(f"position_offset={config.position_offset} (HF {config.family} uses {position_offset})")
    if problems:
        raise ConfigError(f"cannot export this {config.family} model to HF: {'; '.join(problems)}.")


def bert_config_to_hf(config: Any) -> dict[str, Any]:
    """The HF BERT-style config keys of a ModelConfig (roberta / electra / albert extend it)."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn_size,
        "hidden_act": activation_to_hf(config.activation),
        "max_position_embeddings": config.max_positions,
        "type_vocab_size": max(config.type_vocab_size, 1),
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.classifier_dropout,
        "initializer_range": 0.02,
    }


# ---- heads --------------------------------------------------------------------------------------

def mlm_entries(hf: str, *, dense: str = "transform.dense", norm: str = "transform.LayerNorm",
                bias: str = "bias", decoder: str = "decoder") -> Any:
    """MLM head (dense + act + LN + decoder tied to the word embeddings + bias) under HF ``hf``."""
    def entries(config: Any) -> list[Entry]:
        out = [*head_linear("head.mlm.dense", f"{hf}{dense}"), *head_linear("head.mlm.norm", f"{hf}{norm}")]
        if config.tie_word_embeddings:
            return [*out, Entry("head.mlm.bias", (f"{hf}{bias}",), in_body=False)]
        # untied: HF's decoder keeps its own bias (the one its forward adds); a separate ``bias``
        # parameter may sit beside it (BERT, RoBERTa, ALBERT) holding a copy
        decoder_bias = f"{hf}{decoder}.bias"
        copies = () if f"{hf}{bias}" == decoder_bias else (f"{hf}{bias}",)
        return [*out, *head_linear("head.mlm.decoder", f"{hf}{decoder}", bias=False),
                Entry("head.mlm.bias", (decoder_bias,), in_body=False, copies=copies)]
    return entries


def single(lm: str, hf: str) -> Any:
    """A head that is one Linear."""
    def entries(config: Any) -> list[Entry]:
        return head_linear(lm, hf)
    return entries


def both(*parts: Any) -> Any:
    def entries(config: Any) -> list[Entry]:
        return [e for part in parts for e in part(config)]
    return entries


def config_to_hf(config: Any) -> dict[str, Any]:
    check_exportable(config)
    if config.classifier_activation is not None or config.mlm_activation not in (None, config.activation):
        raise ConfigError("cannot export to HF bert: its heads use the pooler and the body activation "
                          "(set classifier_activation=None, mlm_activation=None).")
    return bert_config_to_hf(config)


BERT_MLM = mlm_entries("cls.predictions.")
BERT_MLM_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

FAMILY = HFFamily(
    model_type="bert",
    prefix="bert",
    config_from_hf=lambda hf: bert_config_from_hf(hf, family="bert"),
    config_to_hf=config_to_hf,
    body=bert_body,
    heads={
        None: HeadSpec("BertModel", no_entries, pooler=True),
        "mlm": HeadSpec("BertForMaskedLM", BERT_MLM, tied=BERT_MLM_TIED),
        "pretraining": HeadSpec("BertForPreTraining", both(BERT_MLM, single("head.pair", "cls.seq_relationship")),
                                pooler=True, tied=BERT_MLM_TIED),
        "seq-cls": HeadSpec("BertForSequenceClassification", single("head.classifier", "classifier"), pooler=True),
        "token-cls": HeadSpec("BertForTokenClassification", single("head.classifier", "classifier")),
        "qa": HeadSpec("BertForQuestionAnswering", single("head.qa", "qa_outputs")),
        "choice": HeadSpec("BertForMultipleChoice", single("head.classifier", "classifier"), pooler=True),
    },
)
