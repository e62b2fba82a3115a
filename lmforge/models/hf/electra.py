"""ELECTRA <-> HF ``electra``: BERT's body without a pooler, an E -> H ``embeddings_project`` when the
embedding size is smaller (ELECTRA-small), the replaced-token discriminator (dense + act + 1 logit),
the generator-style MLM head (dense H -> E + GELU + LN + tied decoder), and the classification head
(dense + GELU + out_proj on the first token; multiple choice uses the same shape as "sequence summary").
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import Entry, HeadSpec, HFFamily, linear, no_entries
from lmforge.models.hf.bert import (bert_body, bert_config_from_hf, bert_config_to_hf, both, check_exportable,
                                    mlm_entries, single)


def electra_body(config: Any) -> list[Entry]:
    entries = bert_body(config, pooler=False)
    if config.has_embedding_project:
        entries += linear("body.embeddings.project", "embeddings_project")
    return entries


def electra_mlm(config: Any) -> list[Entry]:
    """The generator-style MLM head; ``generator_lm_head`` is the decoder, tied or not, bias included."""
    return mlm_entries("generator_", dense="predictions.dense", norm="predictions.LayerNorm",
                       bias="lm_head.bias", decoder="lm_head")(config)


RTD = both(single("head.dense", "discriminator_predictions.dense"),
           single("head.classifier", "discriminator_predictions.dense_prediction"))
CLS = both(single("head.summary.dense", "classifier.dense"), single("head.classifier", "classifier.out_proj"))
CHOICE = both(single("head.summary.dense", "sequence_summary.summary"), single("head.classifier", "classifier"))


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    fields = bert_config_from_hf(hf, family="electra")
    fields.update(mlm_activation="gelu", classifier_activation="gelu")
    return fields


def config_to_hf(config: Any) -> dict[str, Any]:
    check_exportable(config)
    if config.has_embedding_project != (config.embed_size != config.hidden_size):
        raise ConfigError("cannot export to HF electra: it has the embedding projection exactly when "
                          "embedding_size != hidden_size (set embedding_project=None).")
    if config.classifier_activation != "gelu" or config.mlm_activation != "gelu" or config.has_pooler:
        raise ConfigError("cannot export to HF electra: its heads need classifier_activation='gelu', "
                          "mlm_activation='gelu' and no pooler.")
    hf = bert_config_to_hf(config)
    hf.update(embedding_size=config.embed_size, summary_type="first", summary_use_proj=True,
              summary_activation="gelu", summary_last_dropout=config.hidden_dropout)
    return hf


FAMILY = HFFamily(
    model_type="electra",
    prefix="electra",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=electra_body,
    heads={
        None: HeadSpec("ElectraModel", no_entries),
        "rtd": HeadSpec("ElectraForPreTraining", RTD),
        "mlm": HeadSpec("ElectraForMaskedLM", electra_mlm, tied=("generator_lm_head.weight",)),
        "seq-cls": HeadSpec("ElectraForSequenceClassification", CLS),
        "token-cls": HeadSpec("ElectraForTokenClassification", single("head.classifier", "classifier")),
        "qa": HeadSpec("ElectraForQuestionAnswering", single("head.qa", "qa_outputs")),
        "choice": HeadSpec("ElectraForMultipleChoice", CHOICE),
    },
)
