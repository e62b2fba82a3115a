"""Pre-training objectives: each builds examples from shards, collates a batch and computes its loss.
clm, mlm, mlm+nsp, mlm+sop and rtd (ELECTRA's replaced-token detection, which owns its generator).

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
from lmforge.objectives.rtd import ReplacedTokenDetection, RTDConfig
from lmforge.objectives.sop import MaskedLMSentenceOrder

OBJECTIVES: dict[str, type[ObjectiveBase]] = {
    "clm": CausalLM,  # GPT-1/2/3: packed windows, EOS between documents
    "mlm": MaskedLM,  # RoBERTa: FULL-SENTENCES, dynamic masking
    "mlm+nsp": MaskedLMNextSentence,  # BERT: static masking x dupe_factor, next-sentence prediction
    "mlm+sop": MaskedLMSentenceOrder,  # ALBERT: sentence-order prediction, n-gram masking of whole words
    "rtd": ReplacedTokenDetection,  # ELECTRA: generator + replaced-token detection
}
ALIASES = {"electra": "rtd"}  # other spellings of an objective's name (the CLI accepts them)


def canonical_name(name: str) -> str:
    """The registry name of an objective spelled ``name`` (an alias or itself)."""
    return ALIASES.get(name, name)


def build_objective(name: str, *, tokenizer: Any, seq_len: int, masking: MaskingConfig | None = None,
                    short_seq_prob: float = 0.1, rtd: RTDConfig | None = None) -> Objective:
    """The objective ``name`` for ``tokenizer`` and ``seq_len``; ``masking`` is None for its default.
    ``rtd`` holds ELECTRA's generator size and loss weights (rtd only)."""
    name = canonical_name(name)
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)} (or electra = rtd)."
                          + suggest(name, [*OBJECTIVES, *ALIASES]))
    if rtd is not None and name != "rtd":
        raise ConfigError(f"generator size and rtd loss weights apply to the rtd objective, not to {name}")
    if name == "rtd":
        return ReplacedTokenDetection(tokenizer=tokenizer, seq_len=seq_len, masking=masking, rtd=rtd)
    if name == "clm":
        if masking is not None:
            raise ConfigError("masking options apply to the mlm objectives, not to clm")
        return CausalLM(tokenizer=tokenizer, seq_len=seq_len)
    if name == "mlm":
        return MaskedLM(tokenizer=tokenizer, seq_len=seq_len, masking=masking)
    cls: Any = OBJECTIVES[name]
    return cls(tokenizer=tokenizer, seq_len=seq_len, masking=masking, short_seq_prob=short_seq_prob)


__all__ = ["ALIASES", "OBJECTIVES", "BatchSource", "CausalLM", "MaskedLM", "MaskedLMNextSentence",
           "MaskedLMSentenceOrder", "MaskingConfig", "Objective", "RTDConfig", "ReplacedTokenDetection",
           "build_objective", "canonical_name", "reduce_metrics"]
