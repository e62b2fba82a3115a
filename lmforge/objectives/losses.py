"""The standard loss functions, defined once.

Heads (``lmforge/models/heads.py``) call these when a model is given ``labels=``; objectives and tasks
call them too. Each matches the loss HF transformers computes for the same head (mean over the
non-ignored targets), so a converted checkpoint gives the same loss as the reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label value that contributes nothing to a loss (HF / PyTorch convention)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions.

    ``logits`` is either gathered, (N, V) with ``labels`` (N,), or full, (B, L, V) with ``labels``
    (B, L) holding -100 at unmasked positions. The mean is over the labels that are not -100.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy; shifts inside, as HF does: position t predicts ``labels[:, t + 1]``.

    logits (B, L, V), labels (B, L) (usually the input ids; -100 where nothing is to be predicted).
    """
    shift_logits = logits[:, :-1, :]  # (B, L-1, V)
    shift_labels = labels[:, 1:]  # (B, L-1)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)).float(),
                           shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)


def sentence_pair_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NSP / SOP: 2-way cross-entropy. logits (B, 2), labels (B,) with 1 = random / swapped."""
    return F.cross_entropy(logits.reshape(-1, 2).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def pretraining_loss(mlm_logits: torch.Tensor, labels: torch.Tensor, pair_logits: torch.Tensor,
                     next_sentence_label: torch.Tensor) -> torch.Tensor:
    """BERT / ALBERT pre-training: MLM loss + sentence-pair loss, summed (HF BertForPreTraining)."""
    return masked_lm_loss(mlm_logits, labels) + sentence_pair_loss(pair_logits, next_sentence_label)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classes; mean squared error for regression (one output, float labels)."""
    if logits.size(-1) == 1:
        return F.mse_loss(logits.reshape(-1).float(), labels.reshape(-1).to(torch.float32))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy. logits (B, L, C), labels (B, L) with -100 on ignored sub-tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
              end_positions: torch.Tensor) -> torch.Tensor:
    """Extractive QA: mean of start and end cross-entropies (HF BertForQuestionAnswering).

    start/end logits (B, L); positions (B,). Positions outside the sequence are clamped to L and
    ignored, which is what HF does for spans cut off by truncation.
    """
    ignored = start_logits.size(1)
    start = start_positions.reshape(-1).clamp(0, ignored)
    end = end_positions.reshape(-1).clamp(0, ignored)
    start_loss = F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
    end_loss = F.cross_entropy(end_logits.float(), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2


def multiple_choice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SWAG-style choice: logits (B, C), labels (B,) the index of the right ending."""
    return F.cross_entropy(logits.float(), labels.reshape(-1))


def replaced_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ELECTRA discriminator: binary cross-entropy per token, over real (non-pad, non -100) tokens.

    logits (B, L), labels (B, L) with 1 = replaced, 0 = original, -100 = ignored.
    """
    active = labels != IGNORE_INDEX
    if attention_mask is not None:
        active = active & (attention_mask == 1)
    return F.binary_cross_entropy_with_logits(logits[active].float(), labels[active].float())


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                      temperature: float = 2.0) -> torch.Tensor:
    """DistilBERT's soft-target loss: KL(teacher || student) at temperature T, scaled by T^2.

    Both (N, V), already restricted to the positions that count. Batch-mean over N.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    p_teacher = F.softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (t * t)
