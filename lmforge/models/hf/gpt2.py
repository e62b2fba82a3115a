"""GPT-2 <-> HF ``gpt2``: config translation, body and head weight maps.

HF GPT-2 keeps its projections as ``Conv1D`` modules whose weight is (in, out), the transpose of
``nn.Linear``; ``c_attn`` already fuses q, k, v (in that order) along its output dimension, so it maps
onto lmforge's ``attn.qkv`` with a transpose and no concatenation. GPT-2 is pre-LN: ``ln_1`` comes
before attention (lmforge ``attn_norm``), ``ln_2`` before the MLP (``mlp_norm``) and ``ln_f`` closes
the stack (``final_norm``). OpenAI GPT (``openai_gpt.py``) reuses the layer map.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import (Entry, HeadSpec, HFFamily, activation_from_hf, activation_to_hf,
                                    head_linear, linear, no_entries)


def conv1d(lm: str, hf: str) -> list[Entry]:
    """A Conv1D (weight (in, out)) as an lmforge Linear: the weight transposed, the bias as is."""
    return [Entry(f"{lm}.weight", (f"{hf}.weight",), transpose=True), Entry(f"{lm}.bias", (f"{hf}.bias",))]


def gpt_layer(i: int) -> list[Entry]:
    """One HF ``h.{i}`` block (GPT-2 and GPT-1 share the names; only the norm placement differs)."""
    lm, hf = f"body.layers.{i}", f"h.{i}"
    return [*conv1d(f"{lm}.attn.qkv", f"{hf}.attn.c_attn"),
            *conv1d(f"{lm}.attn.out", f"{hf}.attn.c_proj"),
            *linear(f"{lm}.attn_norm", f"{hf}.ln_1"),
            *conv1d(f"{lm}.mlp.fc1", f"{hf}.mlp.c_fc"),
            *conv1d(f"{lm}.mlp.fc2", f"{hf}.mlp.c_proj"),
            *linear(f"{lm}.mlp_norm", f"{hf}.ln_2")]


def gpt2_body(config: Any) -> list[Entry]:
    entries = [*linear("body.embeddings.word", "wte", bias=False),
               *linear("body.embeddings.position", "wpe", bias=False)]
    for i in range(config.num_layers):
        entries += gpt_layer(i)
    return entries + linear("body.final_norm", "ln_f")


# ---- config translation -------------------------------------------------------------------------

def token_id_from_hf(hf: dict[str, Any], key: str) -> int | None:
    """A special-token id of the config, or None when it lies outside the vocabulary: GPT2Config's
    defaults (50256) stay in the config.json of small random models, which transformers only warns about."""
    value = hf.get(key)
    return value if isinstance(value, int) and 0 <= value < hf["vocab_size"] else None


def num_labels_from_hf(hf: dict[str, Any]) -> int:
    return len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))


def gpt2_config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig fields of an HF GPT2Config dict."""
    if hf.get("scale_attn_weights", True) is False or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ConfigError("HF gpt2 config with scale_attn_weights=False or scale_attn_by_inverse_layer_idx="
                          "True has attention scaling lmforge does not implement (only 1/sqrt(head size)).")
    hidden = hf["n_embd"]
    return {
        "family": "gpt2",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding_size": hidden,
        "num_layers": hf["n_layer"],
        "num_heads": hf["n_head"],
        "intermediate_size": hf.get("n_inner") or 4 * hidden,
        "activation": activation_from_hf(hf.get("activation_function", "gelu_new"), field="activation_function"),
        "max_positions": hf["n_positions"],
        "position_kind": "learned",
        "type_vocab_size": 0,
        "norm_placement": "pre",
        "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        **gpt_common_from_hf(hf),
    }


def gpt_common_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields GPT-2 and GPT-1 configs spell alike (ids, labels, tying, dropouts)."""
    return {
        "causal": True,
        "pad_token_id": token_id_from_hf(hf, "pad_token_id"),
        "bos_token_id": token_id_from_hf(hf, "bos_token_id"),
        "eos_token_id": token_id_from_hf(hf, "eos_token_id"),
        "num_labels": num_labels_from_hf(hf),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True),
        "hidden_dropout": hf.get("resid_pdrop", 0.1),
        "embedding_dropout": hf.get("embd_pdrop", 0.1),
        "attention_dropout": hf.get("attn_pdrop", 0.1),
        "classifier_dropout": hf.get("summary_first_dropout", 0.1),
    }


def gpt_common_to_hf(config: Any) -> dict[str, Any]:
    """The HF config keys GPT2Config and OpenAIGPTConfig share, from a ModelConfig."""
    return {
        "vocab_size": config.vocab_size,
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_positions": config.max_positions,
        "layer_norm_epsilon": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "resid_pdrop": config.hidden_dropout,
        "embd_pdrop": config.embedding_dropout if config.embedding_dropout is not None else config.hidden_dropout,
        "attn_pdrop": config.attention_dropout,
        "summary_first_dropout": config.classifier_dropout if config.classifier_dropout is not None else 0.1,
        # the DoubleHeads models' SequenceSummary: the hidden state at mc_token_ids -> Linear(H, 1)
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "initializer_range": 0.02,
    }


def gpt2_config_to_hf(config: Any) -> dict[str, Any]:
    return {
        **gpt_common_to_hf(config),
        "n_inner": config.intermediate_size,
        "activation_function": activation_to_hf(config.activation),
    }


# ---- heads --------------------------------------------------------------------------------------

def lm_entries(config: Any) -> list[Entry]:
    """The LM head: tied to wte unless the config unties it (then HF ``lm_head.weight``, no bias)."""
    return [] if config.tie_word_embeddings else head_linear("head.decoder", "lm_head", bias=False)


def seq_cls_entries(config: Any) -> list[Entry]:
    return head_linear("head.classifier", "score", bias=False)


def token_cls_entries(config: Any) -> list[Entry]:
    return head_linear("head.classifier", "classifier")


def qa_entries(config: Any) -> list[Entry]:
    return head_linear("head.qa", "qa_outputs")


def extract_entries(config: Any) -> list[Entry]:
    """DoubleHeads: the LM head + SequenceSummary's Linear(H, 1) at the extract token."""
    return [*lm_entries(config), *head_linear("head.classifier", "multiple_choice_head.summary")]


LM_TIED = ("lm_head.weight",)

FAMILY = HFFamily(
    model_type="gpt2",
    prefix="transformer",
    config_from_hf=gpt2_config_from_hf,
    config_to_hf=gpt2_config_to_hf,
    body=gpt2_body,
    heads={
        None: HeadSpec("GPT2Model", no_entries),
        "clm": HeadSpec("GPT2LMHeadModel", lm_entries, tied=LM_TIED),
        "seq-cls": HeadSpec("GPT2ForSequenceClassification", seq_cls_entries),
        "token-cls": HeadSpec("GPT2ForTokenClassification", token_cls_entries),
        "qa": HeadSpec("GPT2ForQuestionAnswering", qa_entries),
        "extract": HeadSpec("GPT2DoubleHeadsModel", extract_entries, tied=LM_TIED),
    },
    # attn.bias / attn.masked_bias: the causal-mask buffers old GPT-2 checkpoints saved
    ignore=(r"(^|\.)position_ids$", r"^h\.\d+\.attn\.(bias|masked_bias)$"),
    aliases={"lm_head.weight": "wte.weight"},  # a tied checkpoint that kept the head's name
)
