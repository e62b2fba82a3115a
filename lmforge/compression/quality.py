"""Quality on held-out text: the language-model loss a compressed model is scored (and pruned) by.

A text file is tokenized once and cut into windows of ``seq_len`` tokens; the first half of the windows
calibrates (head / neuron importance, recovery fine-tuning), the second half is scored, so the score is
on text the compression never saw. Causal models: next-token perplexity. Masked models: perplexity of
15% of the positions replaced by the mask token (the same positions for every model: seeded).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import DataError, InputError
from lmforge.nn.losses import IGNORE_INDEX

LM_HEADS = ("clm", "extract", "mlm", "pretraining")
MASK_FRACTION = 0.15


def text_windows(path: str | Path, tokenizer: Any, *, seq_len: int, max_tokens: int | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(calibration windows, evaluation windows), each a list of (seq_len,) id tensors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--eval-text {path} is not a file; give a plain-text file of held-out text.")
    text = path.read_text(encoding="utf-8", errors="replace")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[: 2 * max_tokens]
    n = len(ids) // seq_len
    if n < 2:
        raise DataError(f"--eval-text {path} gives {len(ids)} tokens, fewer than two windows of {seq_len}; "
                        "give a longer text or a smaller --seq-len.")
    windows = [torch.tensor(ids[i * seq_len:(i + 1) * seq_len]) for i in range(n)]
    half = n // 2
    return windows[:half], windows[half:]


def check_lm(config: Any) -> None:
    if config.head not in LM_HEADS:
        raise InputError(f"--eval-text scores a language model (head clm / mlm), but this model has head "
                         f"{config.head!r}; score a fine-tuned model with --eval-task and --eval-data instead.")


def mask_batch(ids: torch.Tensor, mask_id: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs with MASK_FRACTION of the positions replaced by ``mask_id``, labels: the true ids there, -100
    elsewhere); the positions depend on ``seed`` only."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(ids.shape, generator=g) < MASK_FRACTION
    pick[..., 0] |= ~pick.any(dim=-1)  # at least one per row
    return ids.masked_fill(pick, mask_id), ids.masked_fill(~pick, IGNORE_INDEX)


def lm_batch(windows: list[torch.Tensor], config: Any, mask_id: int | None, *, seed: int) -> dict[str, torch.Tensor]:
    ids = torch.stack(windows)  # (B, L)
    if config.causal:
        return {"input_ids": ids, "labels": ids}
    if mask_id is None:
        raise InputError("the masked-LM score needs a tokenizer with a mask token.")
    inputs, labels = mask_batch(ids, mask_id, seed=seed)
    return {"input_ids": inputs, "labels": labels}


def lm_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed negative log-likelihood in float32, number of scored tokens) of one LM batch."""
    device = next(model.parameters()).device
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    out = model(ids)
    logits = (out.lm_logits if out.get("lm_logits") is not None else out.logits).float()  # (B, L, V)
    if model.config.causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum")
    return nll, int(labels.ne(IGNORE_INDEX).sum())


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    nll, n = lm_nll(model, batch)
    return nll / max(n, 1)


@torch.no_grad()
def perplexity(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """{"perplexity", "loss", "tokens"} over ``batches`` (token-weighted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        nll, n = lm_nll(model, batch)
        total += float(nll)
        count += n
    model.train(was_training)
    loss = total / max(count, 1)
    return {"perplexity": math.exp(min(loss, 80.0)), "loss": loss, "tokens": count}


def lm_batches(windows: list[torch.Tensor], config: Any, mask_id: int | None, *, batch_size: int,
               seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return [lm_batch(windows[i:i + batch_size], config, mask_id, seed=seed + i)
            for i in range(0, len(windows), batch_size)]


__all__ = ["LM_HEADS", "check_lm", "lm_batch", "lm_batches", "lm_loss", "lm_nll", "mask_batch", "perplexity",
           "text_windows"]
