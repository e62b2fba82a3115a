"""ALBERT <-> HF ``albert``: factorized embeddings (E, then the E -> H ``embedding_hidden_mapping_in``,
present even when E == H), cross-layer sharing (``num_hidden_groups`` groups of ``inner_group_num``
layers; only the unique layers are stored), a pooler that is a bare Linear + tanh, the MLM head
(dense H -> E + act + LN + tied decoder) and the sentence-order (SOP) head of ``AlbertForPreTraining``.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import Entry, HeadSpec, HFFamily, linear, no_entries
from lmforge.models.hf.bert import (bert_config_from_hf, bert_config_to_hf, both, check_exportable, embedding_entries,
                                    layer_entries, mlm_entries, single)

ALBERT_LAYER = {
    "qkv": ("attention.query", "attention.key", "attention.value"),
    "out": "attention.dense",
    "attn_norm": "attention.LayerNorm",
    "fc1": "ffn",
    "fc2": "ffn_output",
    "mlp_norm": "full_layer_layer_norm",
}


def albert_body(config: Any) -> list[Entry]:
    entries = [*embedding_entries(config), *linear("body.embeddings.project", "encoder.embedding_hidden_mapping_in")]
    for u in range(config.num_stored_layers):
        entries += layer_entries(u, f"encoder.albert_layer_groups.{u}.albert_layers.0", ALBERT_LAYER)
    entries += linear("body.pooler.dense", "pooler", optional=True)
    return entries


ALBERT_MLM = mlm_entries("predictions.", dense="dense", norm="LayerNorm", bias="bias")
ALBERT_MLM_TIED = ("predictions.decoder.weight", "predictions.decoder.bias")
ALBERT_PRETRAINING = both(ALBERT_MLM, single("head.pair", "sop_classifier.classifier"))  # MLM + sentence order


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    if hf.get("inner_group_num", 1) != 1:
        raise ConfigError(f"HF ALBERT inner_group_num={hf['inner_group_num']} is not supported (every released "
                          "ALBERT uses 1); lmforge shares whole layers between groups.")
    fields = bert_config_from_hf(hf, family="albert")
    fields.update(num_layer_groups=hf.get("num_hidden_groups", 1), embedding_project=True,
                  classifier_dropout=hf.get("classifier_dropout_prob", 0.1))
    return fields


def config_to_hf(config: Any) -> dict[str, Any]:
    check_exportable(config, shared_layers=True)
    if not config.has_embedding_project or config.classifier_activation is not None or \
            config.mlm_activation not in (None, config.activation) or not config.has_pooler:
        raise ConfigError("cannot export to HF albert: it needs the embedding projection, the pooler, "
                          "classifier_activation=None and mlm_activation=None.")
    hf = bert_config_to_hf(config)
    hf.update(embedding_size=config.embed_size, num_hidden_groups=config.num_stored_layers, inner_group_num=1,
              classifier_dropout_prob=config.classifier_dropout if config.classifier_dropout is not None else 0.1)
    del hf["classifier_dropout"]
    return hf


FAMILY = HFFamily(
    model_type="albert",
    prefix="albert",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=albert_body,
    heads={
        None: HeadSpec("AlbertModel", no_entries, pooler=True),
        "mlm": HeadSpec("AlbertForMaskedLM", ALBERT_MLM, tied=ALBERT_MLM_TIED),
        "pretraining": HeadSpec("AlbertForPreTraining", ALBERT_PRETRAINING, pooler=True, tied=ALBERT_MLM_TIED),
        "seq-cls": HeadSpec("AlbertForSequenceClassification", single("head.classifier", "classifier"), pooler=True),
        "token-cls": HeadSpec("AlbertForTokenClassification", single("head.classifier", "classifier")),
        "qa": HeadSpec("AlbertForQuestionAnswering", single("head.qa", "qa_outputs")),
        "choice": HeadSpec("AlbertForMultipleChoice", single("head.classifier", "classifier"), pooler=True),
    },
)
