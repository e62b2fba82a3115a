"""Pre-training objectives: each builds examples from shards, collates a batch and computes its loss.

``OBJECTIVES`` maps a name to its class; ``build_objective`` makes one with checked options. Loss
functions shared with the model heads live in ``losses.py``; the batch source the trainer pulls from
(O(1) seek by ``(epoch, step)``) is ``base.BatchSource``.
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError, suggest
from lmforge.objectives.base import BatchSource, Objective, ObjectiveBase, reduce_metrics
from lmforge.objectives.clm import CausalLM
from lmforge.objectives.mlm import MaskedLM, MaskingConfig
from lmforge.objectives.nsp import MaskedLMNextSentence
from lmforge.objectives.sop import MaskedLMSentenceOrder

OBJECTIVES: dict[str, type[ObjectiveBase]] = {
    "clm": CausalLM,  # GPT-1/2/3: packed windows, EOS between documents
    "mlm": MaskedLM,  # RoBERTa: FULL-SENTENCES, dynamic masking
    "mlm+nsp": MaskedLMNextSentence,  # BERT: static masking x dupe_factor, next-sentence prediction
    "mlm+sop": MaskedLMSentenceOrder,  # ALBERT: sentence-order prediction
}


def build_objective(name: str, *, tokenizer: Any, seq_len: int, masking: MaskingConfig | None = None,
                    short_seq_prob: float = 0.1) -> Objective:
    """The objective ``name`` for ``tokenizer`` and ``seq_len``; ``masking`` is None for its default."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}."
                          + suggest(name, OBJECTIVES))
    if name == "clm":
        if masking is not None:
            raise ConfigError("masking options apply to the mlm objectives, not to clm")
        return CausalLM(tokenizer=tokenizer, seq_len=seq_len)
    if name == "mlm":
        return MaskedLM(tokenizer=tokenizer, seq_len=seq_len, masking=masking)
    cls: Any = OBJECTIVES[name]
    return cls(tokenizer=tokenizer, seq_len=seq_len, masking=masking, short_seq_prob=short_seq_prob)


__all__ = ["OBJECTIVES", "BatchSource", "CausalLM", "MaskedLM", "MaskedLMNextSentence", "MaskedLMSentenceOrder",
           "MaskingConfig", "Objective", "build_objective", "reduce_metrics"]
