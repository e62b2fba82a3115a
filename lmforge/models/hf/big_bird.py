"""BigBird <-> HF ``big_bird``: BERT's body and names under the prefix ``bert`` (HF BigBirdPreTrainedModel), a
pooler that is one Linear (``pooler.*``), and BigBird's heads.

Config: ``attention_type`` "block_sparse" <-> ``attention_kind="bigbird"`` (``block_size``,
``num_random_blocks``; HF's window and global blocks are fixed at 3 and 2), "original_full" <-> "dense";
``use_bias`` <-> ``qkv_bias``. HF applies the embedding dropout before the embedding LayerNorm, lmforge after it
(the same function in eval mode; a different noise in training). Refused on import: ``rescale_embeddings``
(x sqrt(H) on the word embeddings) and decoders (``is_decoder`` / cross-attention).

Heads (all HF classes but the QA one build the pooler): MaskedLM and PreTraining are BERT's (``cls.*``);
SequenceClassification is dense + hidden_act + out_proj on the first token (lmforge ``classifier_activation`` =
the body activation); MultipleChoice reads the pooler; QuestionAnswering has its own MLP and hides the question
(``qa_head="bigbird"``, ``sep_token_id``).
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import Entry, HeadSpec, HFFamily, head_linear, linear, no_entries, token_id
from lmforge.models.hf.bert import (BERT_LAYER, BERT_MLM, BERT_MLM_TIED, bert_config_from_hf, bert_config_to_hf, both,
                                    embedding_entries, layer_entries, single)

ATTENTION_TYPES = {"block_sparse": "bigbird", "original_full": "dense"}
HF_ATTENTION = {"bigbird": "block_sparse", "dense": "original_full"}


def big_bird_body(config: Any) -> list[Entry]:
    entries = embedding_entries(config)
    for i in range(config.num_layers):
        entries += layer_entries(i, f"encoder.layer.{i}", BERT_LAYER)
    if not config.qkv_bias:  # HF use_bias=False: q / k / v without bias
        drop = {f"body.layers.{i}.attn.qkv.bias" for i in range(config.num_layers)}
        entries = [e for e in entries if e.lm not in drop]
    return entries + linear("body.pooler.dense", "pooler", optional=True)


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    if hf.get("rescale_embeddings"):
        raise ConfigError("HF big_bird config with rescale_embeddings=True (word embeddings x sqrt(hidden_size), "
                          "the Pegasus-style BigBird) is not supported.")
    attention = hf.get("attention_type", "block_sparse")
    if attention not in ATTENTION_TYPES:
        raise ConfigError(f"HF big_bird config attention_type={attention!r} is not one of: "
                          f"{', '.join(ATTENTION_TYPES)}.")
    fields = bert_config_from_hf(hf, family="bigbird")
    fields.update(
        attention_kind=ATTENTION_TYPES[attention],
        block_size=hf.get("block_size", 64),
        num_random_blocks=hf.get("num_random_blocks", 3),
        qkv_bias=hf.get("use_bias", True),
        sep_token_id=token_id(hf.get("sep_token_id", 66)),
        classifier_activation=fields["activation"],  # BigBirdClassificationHead: ACT2FN[hidden_act]
        qa_head="bigbird",
    )
    if fields["sep_token_id"] is not None and fields["sep_token_id"] >= fields["vocab_size"]:
        fields["sep_token_id"] = None  # HF's default 66 in a smaller test vocabulary: no question to hide
    return fields


def head_fields(head: str | None) -> dict[str, Any]:
    """BigBirdForMultipleChoice reads the pooler (its seq-cls head reads the first token)."""
    return {"classifier_token": "pooler"} if head == "choice" else {}


def config_to_hf(config: Any) -> dict[str, Any]:
    problems = []
    if config.norm_placement != "post" or config.causal or config.position_kind != "learned":
        problems.append("a post-LN bidirectional encoder with learned positions")
    if config.attention_pattern or config.attention_kind not in HF_ATTENTION:
        problems.append("attention_kind 'bigbird' or 'dense' in every layer (no attention_pattern)")
    if config.attention_kind == "bigbird" and (config.num_window_blocks, config.num_global_blocks) != (3, 2):
        problems.append("num_window_blocks=3 and num_global_blocks=2 (fixed in HF)")
    if not config.has_embedding_norm or config.num_stored_layers != config.num_layers or config.position_offset:
        problems.append("embedding_norm, every layer stored, position_offset=0")
    if config.attention_scale is not None:
        problems.append("attention_scale=None (HF scales by 1/sqrt(head size))")
    reads = {"choice": "pooler", "seq-cls": "first"}
    if config.head in reads and config.classifier_activation != config.activation:
        problems.append(f"classifier_activation={config.activation!r} (HF uses hidden_act)")
    if config.head == "seq-cls" and config.seq_cls_token != "first":
        problems.append("the seq-cls head on the first token")
    if config.head == "qa" and config.qa_head != "bigbird":
        problems.append("qa_head='bigbird' (HF BigBirdForQuestionAnswering's head)")
    if config.mlm_activation not in (None, config.activation):
        problems.append("mlm_activation=None (HF's MLM head uses hidden_act)")
    if problems:
        raise ConfigError(f"cannot export this model to HF big_bird: it needs {'; '.join(problems)}.")
    hf = bert_config_to_hf(config)
    hf.update(attention_type=HF_ATTENTION[config.attention_kind], block_size=config.block_size,
              num_random_blocks=config.num_random_blocks, use_bias=config.qkv_bias, rescale_embeddings=False,
              sep_token_id=config.sep_token_id)
    return hf


def qa_entries(config: Any) -> list[Entry]:
    """BigBirdForQuestionAnsweringHead: intermediate.dense, output.dense + LayerNorm, qa_outputs."""
    if config.qa_head != "bigbird":
        return single("head.qa", "qa_outputs")(config)  # refused on export by config_to_hf; loads nothing of HF's
    return [*head_linear("head.transform.fc1", "qa_classifier.intermediate.dense"),
            *head_linear("head.transform.fc2", "qa_classifier.output.dense"),
            *head_linear("head.transform.norm", "qa_classifier.output.LayerNorm"),
            *head_linear("head.qa", "qa_classifier.qa_outputs")]


SEQ_CLS = both(single("head.summary.dense", "classifier.dense"), single("head.classifier", "classifier.out_proj"))

FAMILY = HFFamily(
    model_type="big_bird",
    prefix="bert",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=big_bird_body,
    head_fields=head_fields,
    heads={
        None: HeadSpec("BigBirdModel", no_entries, pooler=True),
        "mlm": HeadSpec("BigBirdForMaskedLM", BERT_MLM, pooler=True, tied=BERT_MLM_TIED),
        "pretraining": HeadSpec("BigBirdForPreTraining", both(BERT_MLM, single("head.pair", "cls.seq_relationship")),
                                pooler=True, tied=BERT_MLM_TIED),
        "seq-cls": HeadSpec("BigBirdForSequenceClassification", SEQ_CLS, pooler=True),
        "token-cls": HeadSpec("BigBirdForTokenClassification", single("head.classifier", "classifier"), pooler=True),
        "qa": HeadSpec("BigBirdForQuestionAnswering", qa_entries),
        "choice": HeadSpec("BigBirdForMultipleChoice", single("head.classifier", "classifier"), pooler=True),
    },
)
