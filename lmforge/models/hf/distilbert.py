"""DistilBERT <-> HF ``distilbert``: no segments, no pooler, its own layer names (q_lin ... out_lin,
sa_layer_norm, ffn.lin1/lin2, output_layer_norm), LayerNorm eps fixed at 1e-12, the MLM head
(vocab_transform + act + vocab_layer_norm + tied vocab_projector) and the classification head
(pre_classifier + ReLU + classifier on the first token, for sequence classification and choice).

``sinusoidal_pos_embds`` checkpoints store the fixed table as ``position_embeddings.weight`` too, so
lmforge loads it as a learned table: the values are what count, and they are in the file.
"""
from __future__ import annotations

from typing import Any

from lmforge.models.hf.base import (Entry, HeadSpec, HFFamily, activation_from_hf, activation_to_hf, no_entries,
                                    num_labels_from_hf, token_id)
from lmforge.errors import ConfigError
from lmforge.models.hf.bert import both, check_exportable, embedding_entries, layer_entries, mlm_entries, single

DISTILBERT_LAYER = {
    "qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
    "out": "attention.out_lin",
    "attn_norm": "sa_layer_norm",
    "fc1": "ffn.lin1",
    "fc2": "ffn.lin2",
    "mlp_norm": "output_layer_norm",
}
LAYER_NORM_EPS = 1e-12  # hard-coded in HF's DistilBERT modules


def distilbert_body(config: Any) -> list[Entry]:
    entries = embedding_entries(config, segments=False)
    for i in range(config.num_layers):
        entries += layer_entries(i, f"transformer.layer.{i}", DISTILBERT_LAYER)
    return entries


MLM = mlm_entries("", dense="vocab_transform", norm="vocab_layer_norm", bias="vocab_projector.bias",
                  decoder="vocab_projector")
CLS = both(single("head.summary.dense", "pre_classifier"), single("head.classifier", "classifier"))


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    return {
        "family": "distilbert",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["dim"],
        "embedding_size": None,  # = hidden size
        "num_layers": hf["n_layers"],
        "num_heads": hf["n_heads"],
        "intermediate_size": hf["hidden_dim"],
        "activation": activation_from_hf(hf.get("activation", "gelu"), field="activation"),
        "max_positions": hf["max_position_embeddings"],
        "position_kind": "learned",
        "type_vocab_size": 0,
        "norm_placement": "post",
        "layer_norm_eps": LAYER_NORM_EPS,
        "causal": False,
        "pad_token_id": token_id(hf.get("pad_token_id", 0)),
        "bos_token_id": token_id(hf.get("bos_token_id")),
        "eos_token_id": token_id(hf.get("eos_token_id")),
        "num_labels": num_labels_from_hf(hf),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True),
        "hidden_dropout": hf.get("dropout", 0.1),
        "attention_dropout": hf.get("attention_dropout", 0.1),
        "classifier_dropout": hf.get("seq_classif_dropout", 0.2),
        "classifier_activation": "relu",
    }


def config_to_hf(config: Any) -> dict[str, Any]:
    check_exportable(config)
    if config.type_vocab_size != 0 or config.has_pooler or config.classifier_activation != "relu" or \
            config.mlm_activation not in (None, config.activation) or config.layer_norm_eps != LAYER_NORM_EPS:
        raise ConfigError("cannot export to HF distilbert: it needs type_vocab_size=0, no pooler, "
                          "classifier_activation='relu', mlm_activation=None and layer_norm_eps=1e-12.")
    return {
        "vocab_size": config.vocab_size,
        "dim": config.hidden_size,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "hidden_dim": config.ffn_size,
        "activation": activation_to_hf(config.activation),
        "max_position_embeddings": config.max_positions,
        "sinusoidal_pos_embds": False,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "seq_classif_dropout": config.classifier_dropout if config.classifier_dropout is not None else 0.2,
        "initializer_range": 0.02,
    }


FAMILY = HFFamily(
    model_type="distilbert",
    prefix="distilbert",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=distilbert_body,
    heads={
        None: HeadSpec("DistilBertModel", no_entries),
        "mlm": HeadSpec("DistilBertForMaskedLM", MLM, tied=("vocab_projector.weight",)),
        "seq-cls": HeadSpec("DistilBertForSequenceClassification", CLS),
        "token-cls": HeadSpec("DistilBertForTokenClassification", single("head.classifier", "classifier")),
        "qa": HeadSpec("DistilBertForQuestionAnswering", single("head.qa", "qa_outputs")),
        "choice": HeadSpec("DistilBertForMultipleChoice", CLS),
    },
)
