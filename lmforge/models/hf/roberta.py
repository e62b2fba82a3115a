"""RoBERTa <-> HF ``roberta``: BERT's body under another prefix, fairseq-style positions, and the
RoBERTa heads (LM head with exact GELU; classification head dense + tanh + out_proj on <s>).

Positions: HF numbers real tokens from ``pad_token_id + 1`` and gives pads the position
``pad_token_id``, so the position table has ``max_position_embeddings`` = usable length + pad + 1 rows.
lmforge keeps the whole table and is told the offset through ``ModelConfig.position_offset``.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.heads import summary_token
from lmforge.models.hf.base import HeadSpec, HFFamily, no_entries
from lmforge.models.hf.bert import (bert_body, bert_config_from_hf, bert_config_to_hf, both, check_exportable,
                                    mlm_entries, single)

ROBERTA_MLM = mlm_entries("lm_head.", dense="dense", norm="layer_norm", bias="bias")
ROBERTA_MLM_TIED = ("lm_head.decoder.weight", "lm_head.decoder.bias")
ROBERTA_CLS = both(single("head.summary.dense", "classifier.dense"), single("head.classifier", "classifier.out_proj"))


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    fields = bert_config_from_hf(hf, family="roberta")
    if fields["pad_token_id"] is None:
        raise ConfigError("HF roberta config has pad_token_id=null; RoBERTa numbers positions from the pad id "
                          "(1 in every released model): set it in config.json.")
    fields.update(position_offset=fields["pad_token_id"] + 1, mlm_activation="gelu", classifier_activation="tanh")
    return fields


def head_fields(head: str | None) -> dict[str, Any]:
    """RobertaForMultipleChoice reads the pooler (the seq-cls head has its own dense + tanh); the choice
    head does so on its own (``heads.summary_token``), this records it in a converted config.json too."""
    return {"classifier_token": "pooler"} if head == "choice" else {}


def config_to_hf(config: Any) -> dict[str, Any]:
    check_exportable(config, position_offset=(config.pad_token_id or 0) + 1)
    reads = summary_token(config)
    wanted = {"choice": "pooler", "seq-cls": "first"}.get(config.head, reads)
    if config.classifier_activation != "tanh" or config.mlm_activation != "gelu" or reads != wanted:
        raise ConfigError("cannot export to HF roberta: its heads need classifier_activation='tanh', "
                          "mlm_activation='gelu', and the choice head on the pooler (classifier_token='pooler').")
    return bert_config_to_hf(config)


FAMILY = HFFamily(
    model_type="roberta",
    prefix="roberta",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=bert_body,
    head_fields=head_fields,
    heads={
        None: HeadSpec("RobertaModel", no_entries, pooler=True),
        "mlm": HeadSpec("RobertaForMaskedLM", ROBERTA_MLM, tied=ROBERTA_MLM_TIED),
        "seq-cls": HeadSpec("RobertaForSequenceClassification", ROBERTA_CLS),
        "token-cls": HeadSpec("RobertaForTokenClassification", single("head.classifier", "classifier")),
        "qa": HeadSpec("RobertaForQuestionAnswering", single("head.qa", "qa_outputs")),
        "choice": HeadSpec("RobertaForMultipleChoice", single("head.classifier", "classifier"), pooler=True),
    },
)
