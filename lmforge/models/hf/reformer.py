"""Reformer <-> HF ``reformer`` (``ReformerModel``, ``ReformerModelWithLMHead``): the parity reference of the
``lsh`` / ``local`` attention kinds, ``reversible=True``, ``ff_chunk_size`` and axial positions.

HF ``models/reformer/modeling_reformer.py``: embeddings = word + position (``AxialPositionEmbeddings`` when
``axial_pos_embds``, else a table), no LayerNorm, no segments; every layer is a reversible pre-LN block
(``ReformerLayer``: attn_output = prev + Attention(LN(h)), h = h + FF(LN(attn_output))) whose attention is
``LSHSelfAttention`` (shared ``query_key`` + ``value``, no biases) or ``LocalSelfAttention`` (``query``, ``key``,
``value``, no biases) by ``attn_layers``, with an output ``dense`` without bias; the encoder ends with a
LayerNorm over the concatenated streams (2H) and the LM head is ``Linear(2H, V)`` with a bias (untied).
Heads may be ``attention_head_size`` wide whatever the hidden size (lmforge ``attention_head_size``).
Only one chunk before and none after are supported (HF's defaults, the paper's choice).
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import (Entry, HeadSpec, HFFamily, activation_from_hf, activation_to_hf, linear,
                                    no_entries, num_labels_from_hf, token_id)


def reformer_layer(config: Any, i: int) -> list[Entry]:
    lm, hf = f"body.layers.{i}", f"encoder.layers.{i}"
    sa = f"{hf}.attention.self_attention"
    if config.layer_attention_kind(i) == "lsh":
        attn = [*linear(f"{lm}.attn.qk", f"{sa}.query_key", bias=False),
                *linear(f"{lm}.attn.v", f"{sa}.value", bias=False)]
    else:
        attn = [Entry(f"{lm}.attn.qkv.weight", (f"{sa}.query.weight", f"{sa}.key.weight", f"{sa}.value.weight"))]
    return [*linear(f"{lm}.attn_norm", f"{hf}.attention.layer_norm"), *attn,
            *linear(f"{lm}.attn.out", f"{hf}.attention.output.dense", bias=False),
            *linear(f"{lm}.mlp_norm", f"{hf}.feed_forward.layer_norm"),
            *linear(f"{lm}.mlp.fc1", f"{hf}.feed_forward.dense.dense"),
            *linear(f"{lm}.mlp.fc2", f"{hf}.feed_forward.output.dense")]


def reformer_body(config: Any) -> list[Entry]:
    entries = linear("body.embeddings.word", "embeddings.word_embeddings", bias=False)
    if config.position_kind == "axial":
        entries += [Entry(f"body.embeddings.position.weights.{i}", (f"embeddings.position_embeddings.weights.{i}",))
                    for i in range(len(config.axial_pos_shape))]
    else:
        entries += linear("body.embeddings.position", "embeddings.position_embeddings.embedding", bias=False)
    for i in range(config.num_layers):
        entries += reformer_layer(config, i)
    return entries + linear("body.final_norm", "encoder.layer_norm")


def lm_entries(config: Any) -> list[Entry]:
    # HF keeps the bias twice (lm_head.bias is tied to lm_head.decoder.bias)
    return [Entry("head.decoder.weight", ("lm_head.decoder.weight",), in_body=False),
            Entry("head.bias", ("lm_head.decoder.bias",), in_body=False, copies=("lm_head.bias",))]


def config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    kinds = list(hf.get("attn_layers") or ["local", "lsh", "local", "lsh", "local", "lsh"])
    bad = sorted(set(kinds) - {"lsh", "local"})
    if bad:
        raise ConfigError(f"HF reformer config attn_layers has {bad}; Reformer layers are 'lsh' or 'local'.")
    for name, want in (("lsh_num_chunks_before", 1), ("lsh_num_chunks_after", 0), ("local_num_chunks_before", 1),
                       ("local_num_chunks_after", 0)):
        if hf.get(name, want) != want:
            raise ConfigError(f"HF reformer config {name}={hf[name]} is not supported: lmforge's lsh / local "
                              "attention sees one chunk before and none after (HF's defaults).")
    uses_lsh = "lsh" in kinds
    fields: dict[str, Any] = {
        "family": "reformer",
        "vocab_size": hf.get("vocab_size", 320),
        "hidden_size": hf.get("hidden_size", 256),
        "num_layers": len(kinds),
        "num_heads": hf.get("num_attention_heads", 12),
        "attention_head_size": hf.get("attention_head_size", 64),
        "intermediate_size": hf.get("feed_forward_size", 512),
        "activation": activation_from_hf(hf.get("hidden_act", "relu"), field="hidden_act"),
        "max_positions": hf.get("max_position_embeddings", 4096),
        "type_vocab_size": 0,
        "embedding_norm": False,
        "pooler": False,
        "norm_placement": "pre",
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "causal": bool(hf.get("is_decoder", False)),
        "reversible": True,
        "qkv_bias": False,
        "attention_out_bias": False,
        "lm_head_bias": True,
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "num_buckets": hf.get("num_buckets"),
        "num_hashes": hf.get("num_hashes", 1),
        "lsh_chunk_length": hf.get("lsh_attn_chunk_length") or 64,
        "local_chunk_length": hf.get("local_attn_chunk_length") or 64,
        "hash_seed": hf.get("hash_seed"),
        "ff_chunk_size": hf.get("chunk_size_feed_forward", 0) or 0,
        "hidden_dropout": hf.get("hidden_dropout_prob", 0.05),
        "attention_dropout": hf.get("lsh_attention_probs_dropout_prob", 0.0) if uses_lsh
        else hf.get("local_attention_probs_dropout_prob", 0.05),
        "initializer_range": hf.get("initializer_range", 0.02),
        "pad_token_id": token_id(hf.get("pad_token_id", 0)),
        "eos_token_id": token_id(hf.get("eos_token_id", 2)),
        "bos_token_id": token_id(hf.get("bos_token_id")),
        "num_labels": num_labels_from_hf(hf),
    }
    if hf.get("axial_pos_embds", True):
        fields.update(position_kind="axial", axial_pos_shape=list(hf.get("axial_pos_shape", [64, 64])),
                      axial_pos_embds_dim=list(hf.get("axial_pos_embds_dim", [64, 192])))
    else:
        fields["position_kind"] = "learned"
    if len(set(kinds)) == 1:
        fields["attention_kind"] = kinds[0]
    else:
        fields["attention_pattern"] = kinds
    return fields


def config_to_hf(config: Any) -> dict[str, Any]:
    kinds = [config.layer_attention_kind(i) for i in range(config.num_layers)]
    problems = []
    if not set(kinds) <= {"lsh", "local"}:
        problems.append("lsh / local attention layers only")
    if (not config.reversible or config.qkv_bias or config.attention_out_bias
            or config.num_stored_layers != config.num_layers):
        problems.append("reversible=True, qkv_bias=False, attention_out_bias=False, every layer stored")
    if config.has_embedding_norm or config.type_vocab_size or config.position_kind not in ("axial", "learned"):
        problems.append("no embedding LayerNorm, no segments, axial or learned positions")
    if config.lsh_dedup and config.num_hashes > 1 and "lsh" in kinds:
        problems.append("lsh_dedup=False (HF does not de-duplicate keys across hash rounds)")
    if config.head == "clm" and not config.lm_head_bias:
        problems.append("lm_head_bias=True (HF's LM head has a bias)")
    if problems:
        raise ConfigError(f"cannot export this model to HF reformer: it needs {'; '.join(problems)}.")
    axial = config.position_kind == "axial"
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_heads,
        "attention_head_size": config.reformer_head_size,
        "attn_layers": kinds,
        "num_hidden_layers": config.num_layers,
        "feed_forward_size": config.ffn_size,
        "hidden_act": activation_to_hf(config.activation),
        "max_position_embeddings": config.max_positions,
        "axial_pos_embds": axial,
        "axial_pos_shape": config.axial_pos_shape if axial else [64, 64],
        "axial_pos_embds_dim": config.axial_pos_embds_dim if axial else [64, 192],
        "is_decoder": config.causal,
        "layer_norm_eps": config.layer_norm_eps,
        "num_buckets": config.num_buckets,
        "num_hashes": config.num_hashes,
        "lsh_attn_chunk_length": config.lsh_chunk_length,
        "local_attn_chunk_length": config.local_chunk_length,
        "lsh_num_chunks_before": 1, "lsh_num_chunks_after": 0,
        "local_num_chunks_before": 1, "local_num_chunks_after": 0,
        "hash_seed": config.hash_seed,
        "chunk_size_feed_forward": config.ff_chunk_size,
        "hidden_dropout_prob": config.hidden_dropout,
        "lsh_attention_probs_dropout_prob": config.attention_dropout,
        "local_attention_probs_dropout_prob": config.attention_dropout,
        "initializer_range": config.initializer_range,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "bos_token_id": config.bos_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
    }


FAMILY = HFFamily(
    model_type="reformer",
    prefix="reformer",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    body=reformer_body,
    heads={
        None: HeadSpec("ReformerModel", no_entries),
        "clm": HeadSpec("ReformerModelWithLMHead", lm_entries),
    },
)
