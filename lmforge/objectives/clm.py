"""Causal language modeling (GPT-1/2/3): packed fixed-length windows, EOS between documents.

The split is read as one stream ``doc0 EOS doc1 EOS doc2 EOS ...`` cut into consecutive windows of
``seq_len`` tokens (the tail that does not fill a window is dropped). Every window is full, so a batch
needs no padding and no attention mask. Labels are the input ids; the loss shifts them (HF style).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmforge.errors import ConfigError
from lmforge.objectives.base import Batch, Example, Metrics, ObjectiveBase


class _Windows:
    """Window ``i`` = stream positions ``[i * L, (i + 1) * L)``; O(log docs) to build, no replay."""

    def __init__(self, dataset: Any, seq_len: int, eos_id: int) -> None:
        self.dataset, self.seq_len, self.eos_id = dataset, seq_len, eos_id
        # stream position of the EOS after each document: its end offset plus the EOS before it
        self.eos_pos = np.asarray(dataset.doc_offsets[1:], dtype=np.int64) + np.arange(dataset.num_documents)
        self.num_windows = (dataset.num_tokens + dataset.num_documents) // seq_len

    def __len__(self) -> int:
        return self.num_windows

    def window(self, index: int) -> np.ndarray:
        """The ``seq_len`` ids of window ``index`` (int64)."""
        if not 0 <= index < self.num_windows:
            raise IndexError(f"window {index} outside [0, {self.num_windows})")
        p, q = index * self.seq_len, (index + 1) * self.seq_len
        e0, e1 = np.searchsorted(self.eos_pos, [p, q], side="left")  # EOS before p / before q
        out = np.empty(self.seq_len, dtype=np.int64)
        is_eos = np.zeros(self.seq_len, dtype=bool)
        is_eos[self.eos_pos[e0:e1] - p] = True
        out[is_eos] = self.eos_id
        out[~is_eos] = self.dataset.tokens(p - e0, q - e1)  # the tokens between are contiguous
        return out

    def example(self, index: int, *, seed: int, epoch: int) -> Example:
        return {"input_ids": self.window(index)}


class CausalLM(ObjectiveBase):
    """Next-token prediction over packed windows. ``OBJECTIVES["clm"]``."""

    name = "clm"
    head = "clm"

    def __init__(self, *, tokenizer: Any, seq_len: int) -> None:
        if seq_len < 2:
            raise ConfigError(f"seq_len must be at least 2 for clm, got {seq_len}")
        eos = tokenizer.eos_token_id
        if eos is None:  # WordPiece vocabularies have no EOS; [SEP] is their document separator
            eos = tokenizer.sep_token_id
        if eos is None:
            raise ConfigError("clm needs an end-of-document token: the tokenizer has neither an eos nor a sep "
                              "token; train or load a tokenizer with one (e.g. <|endoftext|>)")
        self.seq_len, self.eos_token_id = seq_len, int(eos)

    def examples(self, dataset: Any) -> _Windows:
        return _Windows(dataset, self.seq_len, self.eos_token_id)

    def collate(self, examples: Sequence[Example]) -> Batch:
        ids = torch.from_numpy(np.stack([e["input_ids"] for e in examples]))  # (B, L)
        return {"input_ids": ids, "labels": ids.clone()}

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        # return_logits=False: the head's fused loss never builds the (B, L, V) logits (memory, speed)
        out = model(batch["input_ids"], labels=batch["labels"], return_logits=False)
        loss = out.loss
        predicted = batch["labels"][:, 1:].ne(-100).sum()
        metrics = {"loss": loss.detach(), "clm_loss": loss.detach(), "predicted_tokens": predicted,
                   "weight": predicted, "tokens": torch.tensor(batch["input_ids"].numel())}
        return loss, metrics
