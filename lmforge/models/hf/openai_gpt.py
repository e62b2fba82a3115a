"""OpenAI GPT (GPT-1) <-> HF ``openai-gpt``: config translation, body and head weight maps.

The layer tensors have GPT-2's names (Conv1D, fused ``c_attn``; see ``gpt2.py``) but the block is
post-LN like BERT: ``ln_1`` follows the attention residual (lmforge ``attn_norm``), ``ln_2`` the MLP
residual (``mlp_norm``), and there is no final norm. Embeddings are ``tokens_embed`` +
``positions_embed``. HF's ``afn="gelu"`` is *not* exact GELU: modeling_openai.py's ``ACT_FNS`` maps
"gelu" to ``gelu_new`` (the tanh approximation of the original TF code), so lmforge reads it as
"gelu_new" and writes "gelu_new" back as "gelu".
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.models.hf.base import Entry, HeadSpec, HFFamily, linear, no_entries
from lmforge.models.hf.gpt2 import (LM_TIED, extract_entries, gpt_common_from_hf, gpt_common_to_hf,
                                    gpt_layer, lm_entries, seq_cls_entries)

# HF openai-gpt ``afn`` <-> lmforge activation (modeling_openai.ACT_FNS)
AFN_FROM_HF = {"gelu": "gelu_new", "relu": "relu"}
AFN_TO_HF = {v: k for k, v in AFN_FROM_HF.items()}


def openai_gpt_body(config: Any) -> list[Entry]:
    entries = [*linear("body.embeddings.word", "tokens_embed", bias=False),
               *linear("body.embeddings.position", "positions_embed", bias=False)]
    for i in range(config.num_layers):
        entries += gpt_layer(i)
    return entries


def openai_gpt_config_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    afn = hf.get("afn", "gelu")
    if afn not in AFN_FROM_HF:
        raise ConfigError(f"HF openai-gpt config afn={afn!r} has no lmforge activation; supported: "
                          f"{', '.join(AFN_FROM_HF)}.")
    hidden = hf["n_embd"]
    return {
        "family": "openai-gpt",
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "embedding_size": hidden,
        "num_layers": hf["n_layer"],
        "num_heads": hf["n_head"],
        "intermediate_size": 4 * hidden,  # HF OpenAIGPT's MLP is always 4 * n_embd
        "activation": AFN_FROM_HF[afn],
        "max_positions": hf["n_positions"],
        "position_kind": "learned",
        "type_vocab_size": 0,
        "norm_placement": "post",
        "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        **gpt_common_from_hf(hf),
    }


def openai_gpt_config_to_hf(config: Any) -> dict[str, Any]:
    if config.activation not in AFN_TO_HF:
        raise ConfigError(f"activation {config.activation!r} cannot be exported to HF openai-gpt; "
                          f"exportable: {', '.join(AFN_TO_HF)}.")
    if config.intermediate_size != 4 * config.hidden_size:
        raise ConfigError(f"HF openai-gpt fixes the MLP size at 4 * hidden_size = {4 * config.hidden_size}; "
                          f"this model has intermediate_size={config.intermediate_size}, so it cannot be "
                          "exported as openai-gpt.")
    return {**gpt_common_to_hf(config), "afn": AFN_TO_HF[config.activation]}


FAMILY = HFFamily(
    model_type="openai-gpt",
    prefix="transformer",
    config_from_hf=openai_gpt_config_from_hf,
    config_to_hf=openai_gpt_config_to_hf,
    body=openai_gpt_body,
    heads={
        None: HeadSpec("OpenAIGPTModel", no_entries),
        "clm": HeadSpec("OpenAIGPTLMHeadModel", lm_entries, tied=LM_TIED),
        "seq-cls": HeadSpec("OpenAIGPTForSequenceClassification", seq_cls_entries),
        # OpenAIGPTDoubleHeadsModel = GPT-1's fine-tuning model: LM head + Linear(H, 1) at the extract token
        "extract": HeadSpec("OpenAIGPTDoubleHeadsModel", extract_entries, tied=LM_TIED),
    },
    ignore=(r"(^|\.)position_ids$", r"^h\.\d+\.attn\.bias$"),
    # transformers 5 saves OpenAIGPTDoubleHeadsModel's tied matrix as lm_head.weight, not tokens_embed
    aliases={"lm_head.weight": "tokens_embed.weight"},
)
